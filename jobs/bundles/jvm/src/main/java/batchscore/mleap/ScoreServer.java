package batchscore.mleap;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import ml.combust.mleap.json.DefaultFrameReader;
import ml.combust.mleap.json.DefaultFrameWriter;
import ml.combust.mleap.runtime.MleapContext;
import ml.combust.mleap.runtime.frame.DefaultLeapFrame;
import ml.combust.mleap.runtime.frame.Transformer;
import ml.combust.mleap.runtime.javadsl.BundleBuilder;
import ml.combust.mleap.runtime.javadsl.ContextBuilder;

/**
 * Scores LeapFrames with MLeap's own runtime, for as long as its caller keeps stdin open.
 *
 * <p>Each request is two lines on stdin: the bundle's path (a zip file or a directory),
 * then a LeapFrame in MLeap's JSON on one line. Each answer is one line on stdout:
 * {@code ok <LeapFrame JSON>} with the transformed frame, or {@code error <message>}
 * with what MLeap said. The process answers {@code ready} once MLeap is loaded and
 * exits when stdin closes. Anything else MLeap or its libraries print goes to stderr,
 * so stdout carries answers only.
 */
public final class ScoreServer {
    private final MleapContext context = new ContextBuilder().createMleapContext();
    private final BundleBuilder bundles = new BundleBuilder();
    private final Map<String, Loaded> loaded = new HashMap<>();

    /** A loaded bundle and the file state it was loaded from, so a rewritten bundle reloads. */
    private record Loaded(long modified, long length, Transformer root) {}

    public static void main(String[] args) throws Exception {
        PrintStream answers = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        ScoreServer server = new ScoreServer();
        BufferedReader requests = new BufferedReader(
                new InputStreamReader(System.in, StandardCharsets.UTF_8));
        answers.println("ready");
        String bundlePath;
        while ((bundlePath = requests.readLine()) != null) {
            String frameJson = requests.readLine();
            if (frameJson == null) {
                answers.println("error a request needs a frame line after the bundle path");
                break;
            }
            answers.println(server.answer(bundlePath, frameJson));
        }
    }

    private String answer(String bundlePath, String frameJson) {
        try {
            Transformer root = bundle(new File(bundlePath));
            DefaultLeapFrame frame = new DefaultFrameReader()
                    .fromBytes(frameJson.getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8)
                    .get();
            DefaultLeapFrame scored = root.transform(frame).get();
            byte[] json = new DefaultFrameWriter<>(scored).toBytes(StandardCharsets.UTF_8).get();
            return "ok " + new String(json, StandardCharsets.UTF_8).replace('\n', ' ');
        } catch (Throwable err) {
            return "error " + describe(err);
        }
    }

    private Transformer bundle(File file) throws Exception {
        if (!file.exists()) {
            throw new IllegalArgumentException("no bundle at " + file);
        }
        String key = file.getAbsolutePath();
        Loaded cached = loaded.get(key);
        if (cached == null || cached.modified() != file.lastModified()
                || cached.length() != file.length()) {
            cached = new Loaded(file.lastModified(), file.length(),
                    bundles.load(file, context).root());
            loaded.put(key, cached);
        }
        return cached.root();
    }

    /** The exception and its causes on one line: MLeap's own words, not a stack trace. */
    private static String describe(Throwable err) {
        StringBuilder text = new StringBuilder();
        for (Throwable t = err; t != null; t = t.getCause() == t ? null : t.getCause()) {
            if (text.length() > 0) {
                text.append(" <- ");
            }
            text.append(t.getClass().getName());
            if (t.getMessage() != null) {
                text.append(": ").append(t.getMessage());
            }
        }
        return text.toString().replace('\n', ' ').replace('\r', ' ');
    }
}
