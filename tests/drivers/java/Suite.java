// JDBC (Debian's pgjdbc) through pgweir, in its default settings: prepareThreshold 5,
// so a PreparedStatement run 5 times becomes a named server-side statement. Batches,
// transactions and savepoints, errors, CopyManager, session SETs, and threads sharing
// a small set of connections.
//
// Run: java -cp /usr/share/java/postgresql.jar Suite.java with PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGDATABASE set (exit 0 = all passed). PGWEIR_POOL_MODE=transaction also
// asserts that work really moved between server connections.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGStatement;

public class Suite {
    static final String URL = "jdbc:postgresql://" + System.getenv("PGHOST") + ":"
            + System.getenv("PGPORT") + "/" + System.getenv("PGDATABASE")
            // PGWEIR_DRIVERS_TLS=1 passes "?sslmode=verify-full&sslrootcert=...".
            + java.util.Objects.requireNonNullElse(System.getenv("PGWEIR_JDBC_PARAMS"), "");
    static final boolean SHARED = "transaction".equals(System.getenv("PGWEIR_POOL_MODE"));

    interface Step { void run() throws Exception; }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static Connection connect(String appName) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", System.getenv("PGUSER"));
        p.setProperty("password", System.getenv("PGPASSWORD"));
        if (appName != null) p.setProperty("ApplicationName", appName);
        return DriverManager.getConnection(URL, p);
    }

    static void expectState(String state, Step s) throws Exception {
        try {
            s.run();
        } catch (SQLException e) {
            check(state.equals(e.getSQLState()), "expected " + state + ", got " + e.getSQLState() + ": " + e.getMessage());
            return;
        }
        throw new AssertionError("expected SQLSTATE " + state);
    }

    static List<Integer> ids(Connection c, String sql) throws SQLException {
        List<Integer> out = new ArrayList<>();
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            while (rs.next()) out.add(rs.getInt(1));
        }
        return out;
    }

    static void schema() throws Exception {
        try (Connection c = connect(null); Statement s = c.createStatement()) {
            s.execute("DROP SCHEMA IF EXISTS jdbc CASCADE");
            s.execute("CREATE SCHEMA jdbc");
            s.execute("CREATE TABLE jdbc.items (id int PRIMARY KEY, owner int NOT NULL, label text)");
            s.execute("CREATE TABLE jdbc.marker (v text)");
            s.execute("INSERT INTO jdbc.marker VALUES ('from jdbc')");
        }
    }

    static void transactions() throws Exception {
        try (Connection c = connect(null)) {
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc.items VALUES (?, 0, ?)")) {
                ins.setInt(1, 1); ins.setString(2, "kept"); ins.executeUpdate();
                c.commit();
                ins.setInt(1, 2); ins.setString(2, "rolled back"); ins.executeUpdate();
                c.rollback();
                ins.setInt(1, 3); ins.setString(2, "outer"); ins.executeUpdate();
                Savepoint sp = c.setSavepoint();
                ins.setInt(1, 4); ins.setString(2, "back to the savepoint"); ins.executeUpdate();
                c.rollback(sp);
                c.commit();
                for (int i = 0; i < 10; i++) { // a batch, in one transaction, with a prepared statement by now
                    ins.setInt(1, 1000 + i); ins.setString(2, "batch " + i); ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                check(counts.length == 10 && Arrays.stream(counts).allMatch(n -> n == 1), "batch counts");
                c.commit();
                check(ins.unwrap(PGStatement.class).isUseServerPrepare(), "server-side prepared after 5 runs");
            }
            List<Integer> got = ids(c, "SELECT id FROM jdbc.items WHERE id < 1000 ORDER BY id");
            check(got.equals(List.of(1, 3)), "committed rows only, got " + got);
            check(ids(c, "SELECT count(*) FROM jdbc.items WHERE id >= 1000").equals(List.of(10)), "batch rows");
            c.commit();
        }
    }

    static void errorsAndRecovery() throws Exception {
        try (Connection c = connect(null)) {
            PreparedStatement div = c.prepareStatement("SELECT 10 / ?");
            for (int i = 1; i <= 7; i++) {
                div.setInt(1, i);
                try (ResultSet rs = div.executeQuery()) {
                    rs.next();
                    check(rs.getInt(1) == 10 / i, "division result");
                }
            }
            div.setInt(1, 0);
            expectState("22012", () -> div.executeQuery().close());
            div.setInt(1, 2);
            try (ResultSet rs = div.executeQuery()) {
                rs.next();
                check(rs.getInt(1) == 5, "prepared statement after an error");
            }
            expectState("42P01", () -> ids(c, "SELECT * FROM jdbc.nope"));
            check(ids(c, "SELECT 1").equals(List.of(1)), "connection works after an error");

            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("INSERT INTO jdbc.items VALUES (10, 0, 'before the error')");
                c.commit();
                s.execute("INSERT INTO jdbc.items VALUES (11, 0, 'lost')");
                div.setInt(1, 0);
                expectState("22012", () -> div.executeQuery().close());
                div.setInt(1, 1);
                expectState("25P02", () -> div.executeQuery().close());
                c.rollback();
            }
            List<Integer> got = ids(c, "SELECT id FROM jdbc.items WHERE id BETWEEN 10 AND 999 ORDER BY id");
            check(got.equals(List.of(10)), "the failed transaction left nothing, got " + got);
            c.commit();
        }
    }

    static void preparedAcrossTransactions() throws Exception {
        BlockingQueue<Connection> pool = new ArrayBlockingQueue<>(4);
        for (int i = 0; i < 4; i++) {
            Connection c = connect(null);
            c.setAutoCommit(false);
            pool.add(c);
        }
        ExecutorService threads = Executors.newFixedThreadPool(6);
        try {
            List<Future<Set<Integer>>> results = new ArrayList<>();
            for (int w = 1; w <= 6; w++) {
                final int worker = w;
                results.add(threads.submit(() -> {
                    Set<Integer> seen = new HashSet<>();
                    for (int i = 0; i < 25; i++) {
                        Connection c = pool.take();
                        try (PreparedStatement q = c.prepareStatement("SELECT ?::int * 1000 + ?::int, pg_backend_pid()");
                             PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc.items VALUES (?, ?, ?)");
                             PreparedStatement count = c.prepareStatement("SELECT count(*) FROM jdbc.items WHERE owner = ?");
                             Statement s = c.createStatement()) {
                            q.setInt(1, worker); q.setInt(2, i);
                            try (ResultSet rs = q.executeQuery()) {
                                rs.next();
                                check(rs.getInt(1) == worker * 1000 + i, "worker " + worker + " got " + rs.getInt(1));
                                seen.add(rs.getInt(2));
                            }
                            ins.setInt(1, 100_000 + worker * 1000 + i); ins.setInt(2, worker); ins.setString(3, "w" + worker);
                            ins.executeUpdate();
                            s.execute("SELECT pg_sleep(0.002)");
                            c.commit();
                            count.setInt(1, worker);
                            try (ResultSet rs = count.executeQuery()) {
                                rs.next();
                                check(rs.getInt(1) == i + 1, "worker " + worker + " sees " + rs.getInt(1) + " own rows");
                            }
                            c.commit();
                        } finally {
                            pool.put(c);
                        }
                    }
                    return seen;
                }));
            }
            Set<Integer> all = new HashSet<>();
            boolean moved = false;
            for (Future<Set<Integer>> f : results) {
                Set<Integer> seen = f.get(60, TimeUnit.SECONDS);
                all.addAll(seen);
                moved |= seen.size() >= 2;
            }
            System.out.println("  workers ran on " + all.size() + " server connections");
            if (SHARED) {
                check(all.size() >= 2, "transaction mode spreads work over server connections");
                check(moved, "a client's statements moved servers");
            }
        } finally {
            threads.shutdownNow();
            for (Connection c : pool) c.close();
        }
    }

    static void copy() throws Exception {
        try (Connection c = connect(null)) {
            var api = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder in = new StringBuilder();
            for (int i = 0; i < 500; i++) in.append(200_000 + i).append("\t99\tcopied ").append(i).append('\n');
            long n = api.copyIn("COPY jdbc.items (id, owner, label) FROM STDIN", new StringReader(in.toString()));
            check(n == 500, "copy in count " + n);
            StringWriter out = new StringWriter();
            api.copyOut("COPY (SELECT id, label FROM jdbc.items WHERE owner = 99 ORDER BY id) TO STDOUT", out);
            String[] lines = out.toString().split("\n");
            check(lines.length == 500 && lines[7].equals("200007\tcopied 7"), "copy out: " + lines.length + " lines");
            expectState("23505", () -> api.copyIn("COPY jdbc.items (id, owner, label) FROM STDIN",
                    new StringReader("200000\t99\tduplicate\n")));
            check(ids(c, "SELECT count(*) FROM jdbc.items WHERE owner = 99").equals(List.of(500)), "failed COPY added nothing");
        }
    }

    static void sessionSettings() throws Exception {
        try (Connection a = connect(null); Connection b = connect("jdbc-b");
             Statement sa = a.createStatement(); Statement sb = b.createStatement()) {
            String bZone = query(sb, "SHOW TimeZone");
            sa.execute("SET TimeZone = 'Asia/Tokyo'");
            sa.execute("SET application_name = 'jdbc-suite'");
            sa.execute("SET search_path = jdbc, public");
            sa.execute("SET statement_timeout = '7s'");
            a.setAutoCommit(false);
            b.setAutoCommit(false);
            String q = "SELECT current_setting('TimeZone') || ' ' || current_setting('application_name') || ' ' || current_setting('statement_timeout')";
            for (int i = 0; i < 8; i++) {
                String got = query(sa, q) + " " + query(sa, "SELECT v FROM marker");
                check(got.equals("Asia/Tokyo jdbc-suite 7s from jdbc"), "client A settings " + got);
                got = query(sb, q);
                check(got.equals(bZone + " jdbc-b 0"), "client B sees only its own settings " + got);
                a.commit();
                b.commit();
                Thread.sleep(10);
            }
            a.setAutoCommit(true);
            sa.execute("RESET TimeZone");
            String zone = query(sa, "SHOW TimeZone");
            check(zone.equals(bZone), "RESET gives back the startup TimeZone " + bZone + ", got " + zone);
            check(zone.equals(a.unwrap(PGConnection.class).getParameterStatus("TimeZone")),
                    "ParameterStatus TimeZone follows RESET");
            b.commit();
        }
    }

    static String query(Statement s, String sql) throws SQLException {
        try (ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    public static void main(String[] args) {
        long started = System.nanoTime();
        List<String> failed = new ArrayList<>();
        Map<String, Step> steps = new LinkedHashMap<>();
        steps.put("schema", Suite::schema);
        steps.put("transactions", Suite::transactions);
        steps.put("errorsAndRecovery", Suite::errorsAndRecovery);
        steps.put("preparedAcrossTransactions", Suite::preparedAcrossTransactions);
        steps.put("copy", Suite::copy);
        steps.put("sessionSettings", Suite::sessionSettings);
        for (var step : steps.entrySet()) {
            long t = System.nanoTime();
            try {
                step.getValue().run();
                System.out.printf("ok %s (%.2f s)%n", step.getKey(), (System.nanoTime() - t) / 1e9);
            } catch (Throwable e) {
                Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
                String state = cause instanceof SQLException ? " [" + ((SQLException) cause).getSQLState() + "]" : "";
                System.out.println("FAIL " + step.getKey() + ": " + cause.getClass().getSimpleName() + state + ": " + cause.getMessage());
                failed.add(step.getKey());
            }
        }
        if (!failed.isEmpty()) {
            System.out.println("JDBC suite FAILED: " + String.join(", ", failed));
            System.exit(1);
        }
        System.out.printf("JDBC suite passed in %.2f s%n", (System.nanoTime() - started) / 1e9);
    }
}
