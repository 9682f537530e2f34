"""Data contracts: Great Expectations gates on inputs and predictions."""
