import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;
import org.neo4j.io.fs.DefaultFileSystemAbstraction;
import org.neo4j.kernel.impl.security.User;
import org.neo4j.logging.NullLogProvider;
import org.neo4j.memory.EmptyMemoryTracker;
import org.neo4j.server.security.SecureHasher;
import org.neo4j.server.security.SystemGraphCredential;
import org.neo4j.server.security.auth.CommunitySecurityModule;
import org.neo4j.server.security.auth.FileUserRepository;

/**
 * A Neo4j community DBMS (embedded API) with its Bolt connector on 127.0.0.1:PORT.
 *
 * <pre>java -cp 'HOME/classes:HOME/lib/*:HOME/plugins/*' Neo4jServer HOME PORT [--exit-on-stdin-eof]</pre>
 *
 * Data in HOME/data, logs in HOME/logs (or under the environment variable NEO4J_STATE), procedure jars (GDS, APOC) in HOME/plugins, with
 * {@code gds.*} and {@code apoc.*} unrestricted. Auth is on: user {@code neo4j}, password from
 * the environment variable NEO4J_PASSWORD, set before the first start (as
 * {@code neo4j-admin dbms set-initial-password} does) with no forced change. Page cache: the
 * environment variable NEO4J_PAGECACHE (default 256m); the heap is the JVM's -Xmx. Transaction
 * logs are not preallocated (256 MiB a database otherwise).
 *
 * Prints one line "NEO4J-SERVER-STARTED bolt://127.0.0.1:PORT" once the DBMS is up. Shuts the DBMS
 * down cleanly on SIGTERM/SIGINT (a shutdown hook) and, with --exit-on-stdin-eof, when stdin
 * reaches end of file: a parent that holds the pipe cannot be outlived. Either one during the
 * start exits at once (the next start recovers the store).
 */
public final class Neo4jServer {
    private static final String USER = "neo4j";

    private Neo4jServer() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 3 || (args.length == 3 && !args[2].equals("--exit-on-stdin-eof"))) {
            System.err.println("usage: Neo4jServer HOME PORT [--exit-on-stdin-eof]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath().normalize();
        int port = Integer.parseInt(args[1]);
        boolean exitOnStdinEof = args.length == 3;
        String password = System.getenv("NEO4J_PASSWORD");
        if (password == null || password.length() < 8) {
            System.err.println("NEO4J_PASSWORD must be set, 8 characters or more");
            System.exit(2);
        }
        String pageCache = System.getenv().getOrDefault("NEO4J_PAGECACHE", "256m");

        // NEO4J_STATE: another directory for data/ and logs/ (a database bulk-imported there)
        Path state = Path.of(System.getenv().getOrDefault("NEO4J_STATE", home.toString())).toAbsolutePath();
        Path data = state.resolve("data");
        Path logs = state.resolve("logs");
        Path plugins = home.resolve("plugins");
        Files.createDirectories(logs);
        if (!Files.exists(data.resolve("databases").resolve("system"))) {
            writeInitialPassword(home, data, password);
        }

        // Registered before the DBMS starts, so that a signal or EOF during the start ends it too.
        AtomicReference<DatabaseManagementService> running = new AtomicReference<>();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> shutdown(running), "neo4j-server-shutdown"));
        if (exitOnStdinEof) {
            Thread watcher = new Thread(Neo4jServer::exitAtStdinEof, "neo4j-server-stdin");
            watcher.setDaemon(true);
            watcher.start();
        }

        running.set(new DatabaseManagementServiceBuilder(home)
                .setConfig(GraphDatabaseSettings.data_directory, data)
                .setConfig(GraphDatabaseSettings.logs_directory, logs)
                .setConfig(GraphDatabaseSettings.plugin_dir, plugins)
                .setConfig(GraphDatabaseSettings.procedure_unrestricted, List.of("gds.*", "apoc.*"))
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.parse(pageCache))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                // Bolt's event loops wait 5 s for stragglers at shutdown, after the databases stopped
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .build());
        System.out.println("NEO4J-SERVER-STARTED bolt://127.0.0.1:" + port);
        System.out.flush();
        Thread.currentThread().join();  // until SIGTERM/SIGINT, or EOF on stdin
    }

    private static void exitAtStdinEof() {
        byte[] buffer = new byte[256];
        try {
            while (System.in.read(buffer) != -1) {
                // input is ignored; only end of file matters
            }
        } catch (IOException e) {
            // a broken stdin counts as closed
        }
        System.exit(0);  // runs the shutdown hook
    }

    /** The shutdown hook: a clean DBMS shutdown; during the start, nothing to wait for (recovery on the next start). */
    private static void shutdown(AtomicReference<DatabaseManagementService> running) {
        DatabaseManagementService dbms = running.getAndSet(null);
        if (dbms == null) {
            System.out.println("NEO4J-SERVER-ABORTED");
        } else {
            System.out.println("NEO4J-SERVER-STOPPING");
            System.out.flush();
            dbms.shutdown();
            System.out.println("NEO4J-SERVER-STOPPED");
        }
        System.out.flush();
    }

    /**
     * What {@code neo4j-admin dbms set-initial-password} writes: data/dbms/auth.ini, read at the first
     * start. Internal Neo4j classes, as that command uses them (pinned version, so stable here).
     */
    private static void writeInitialPassword(Path home, Path data, String password) throws IOException {
        Config config = Config.newBuilder()
                .set(GraphDatabaseSettings.neo4j_home, home)
                .set(GraphDatabaseSettings.data_directory, data)
                .build();
        Path file = CommunitySecurityModule.getInitialUserRepositoryFile(config);
        try (DefaultFileSystemAbstraction fs = new DefaultFileSystemAbstraction()) {
            fs.mkdirs(file.getParent());
            if (fs.fileExists(file)) {
                fs.deleteFile(file);
            }
            FileUserRepository repository =
                    new FileUserRepository(fs, file, NullLogProvider.getInstance(), EmptyMemoryTracker.INSTANCE);
            repository.start();
            SystemGraphCredential credential = SystemGraphCredential.createCredentialForPassword(
                    password.getBytes(StandardCharsets.UTF_8), new SecureHasher());
            repository.create(new User(USER, null, credential, false, false));
            repository.shutdown();
        } catch (Exception e) {
            throw new IOException("cannot write the initial password to " + file, e);
        }
    }
}
