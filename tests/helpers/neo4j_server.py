"""A real Neo4j 5.26 community server, with Graph Data Science and APOC, without Docker.

Everything comes from Maven Central: the embedded Neo4j (``org.neo4j:neo4j``, which carries
the Bolt connector), the GDS plugin modules and APOC core. A tiny Java launcher
(``tests/helpers/neo4j/Neo4jServer.java``) starts a ``DatabaseManagementService`` on it.

    assemble(DIR)                       # once: mvn fetches the jars into DIR, javac builds the launcher
    with neo4j_server(DIR) as uri: ...  # bolt://127.0.0.1:PORT, user neo4j, password PASSWORD
    server = start(DIR, PORT, PASSWORD); ...; server.stop()

    python tests/helpers/neo4j_server.py DIR PORT     # prints "ready bolt://127.0.0.1:PORT", then
                                                      # serves until SIGTERM/SIGINT
                                                      # ($NEO4J_HEAP, $NEO4J_PAGE_CACHE: 1g, 256m)
    python tests/helpers/neo4j_server.py --write-lock DIR   # after changing a version below

**Assembly.** :func:`assemble` writes ``DIR/pom.xml`` (the pinned versions below) and runs
``mvn dependency:copy-dependencies`` twice: the GDS and APOC artifacts (groups
``org.neo4j.gds`` and ``org.neo4j.procedure``) into ``DIR/plugins``, everything else into
``DIR/lib``. Maven's local repository is ``DIR/.m2``, removed once the jars are copied. Every
jar is checked against the committed lock ``tests/helpers/neo4j/jars.sha256``
(``sha256  lib/NAME.jar`` lines, the format of ``sha256sum``): a jar missing from the lock,
a locked jar that did not arrive, or a digest mismatch fails with a one-line
:class:`AssemblyError` naming the jar. A second call, with the locked jars present, verifies
them (well under a second: ~130 MB to hash) and touches no network. A stale set of jars (another version) is
replaced; a corrupted jar is refused, not replaced: delete it and assemble again.

GDS on Maven Central is not one plugin jar but ~110 module jars; the packaged plugin is
``proc`` + ``proc-sysinfo`` (``gds.version``) + ``opengds-extension`` (the kernel extension
that builds the procedure facade; without it every GDS procedure fails to load) +
``open-model-catalog`` + ``open-write-services`` (the ``open-packaging`` module of the GDS
repository). APOC core needs ``apoc-common`` beside it (the Maven ``apoc-core`` jar is not
the shaded release jar).

**The server.** The launcher runs with ``DIR/classes``, ``DIR/lib/*`` and ``DIR/plugins/*`` on
the classpath (GDS registers kernel extensions through ``ServiceLoader``) and
``DIR/plugins`` as the procedure directory (the embedded DBMS loads and compiles procedures
from there, exactly like the server, with ``dbms.security.procedures.unrestricted=gds.*,apoc.*``).
Bolt listens on 127.0.0.1:PORT only, without TLS; auth is on, user ``neo4j``, password the
``password`` argument (script mode: ``$NEO4J_PASSWORD``, else :data:`PASSWORD`; 8+
characters), written before the first start as ``neo4j-admin dbms set-initial-password``
does, so no password change is forced; a later start keeps the password ``DIR/data`` was
created with (another one fails fast with an auth error). Heap ``-Xmx1g`` and page cache
256m unless told otherwise; data in ``DIR/data``, logs in ``DIR/logs`` (``debug.log`` from
Neo4j, ``console.log`` the launcher's stdout and stderr). Transaction logs are not
preallocated (Neo4j would reserve 256 MiB per database).

Not there: APOC's Arrow, S3 and Google Cloud Storage procedures (their libraries are
optional in APOC too; ``debug.log`` warns about them), APOC file import/export (off by
default, as in a server: ``DIR/conf/apoc.conf`` would turn it on), and the HTTP API.
A start takes 50-60 s on two busy cores (~110 s with a first assembly); loading the
classes and compiling the ~900 GDS and APOC procedures is most of it.

Ready means the Python driver has answered ``RETURN 1``; a start that fails or times out
raises :class:`Neo4jServerError` with the tail of the logs. The server shuts the DBMS down
cleanly on SIGTERM/SIGINT, and a server from :func:`start` (by default) also when its stdin
pipe closes: it cannot outlive the process that started it. Script mode holds that pipe
itself, so it does not care about its own stdin (a CI script runs it with ``< /dev/null``
in the background) and stops on SIGTERM/SIGINT.

Needs ``mvn`` (for the first assembly only), ``java`` and ``javac`` 17+, and the ``neo4j``
Python driver.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from compgraph.data.digests import file_digest

NEO4J_VERSION = "5.26.19"
GDS_VERSION = "2.13.9"
APOC_VERSION = "5.26.19"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

HERE = Path(__file__).resolve().parent / "neo4j"
LOCK_FILE = HERE / "jars.sha256"
LAUNCHER_SOURCE = HERE / "Neo4jServer.java"

USER = "neo4j"
PASSWORD = "compgraph-neo4j-pw"
HOST = "127.0.0.1"
JAR_DIRS = ("lib", "plugins")
PLUGIN_GROUPS = "org.neo4j.gds,org.neo4j.procedure"
START_TIMEOUT = 300.0

_GDS_MODULES = ("proc", "proc-sysinfo", "opengds-extension", "open-model-catalog", "open-write-services")
_LOCK_LINE = re.compile(r"^([0-9a-f]{64})  ((?:lib|plugins)/[^/\s]+\.jar)$")

# The Java options of a Neo4j 5 server's conf/neo4j.conf, less production tuning, plus exit on OOM.
_JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dlog4j2.disable.jmx=true",
    "-Dfile.encoding=UTF-8",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
)


class Neo4jServerError(RuntimeError):
    """The server could not be assembled or started."""


class AssemblyError(Neo4jServerError):
    """Fetching failed, or a jar is missing, unexpected or differs from the lock (one line naming it)."""


# ---------------------------------------------------------------------------------- assembly


def pom() -> str:
    """The Maven project whose runtime dependencies are the server: Neo4j, GDS, APOC."""
    deps = [("org.neo4j", "neo4j", NEO4J_VERSION)]
    deps += [("org.neo4j.gds", module, GDS_VERSION) for module in _GDS_MODULES]
    deps += [("org.neo4j.procedure", name, APOC_VERSION) for name in ("apoc-common", "apoc-core")]
    dependencies = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )

    def execution(name: str, filter_: str) -> str:
        return (f"          <execution><id>{name}</id><configuration>"
                f"<outputDirectory>${{project.basedir}}/{name}</outputDirectory>"
                f"<includeScope>runtime</includeScope>{filter_}</configuration></execution>")

    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by tests/helpers/neo4j_server.py; edit the versions there. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.compgraph</groupId>
  <artifactId>neo4j-test-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
        <executions>
{execution("plugins", f"<includeGroupIds>{PLUGIN_GROUPS}</includeGroupIds>")}
{execution("lib", f"<excludeGroupIds>{PLUGIN_GROUPS}</excludeGroupIds>")}
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"""


def read_lock(lock: Path = LOCK_FILE) -> dict[str, str]:
    """``{"lib/NAME.jar": sha256}`` from a lock file; a malformed line is an :class:`AssemblyError`."""
    entries: dict[str, str] = {}
    for number, line in enumerate(Path(lock).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LOCK_LINE.match(line)
        if not match:
            raise AssemblyError(f"{lock}:{number}: not a 'sha256  lib|plugins/NAME.jar' line: {line!r}")
        digest, name = match.groups()
        if name in entries:
            raise AssemblyError(f"{lock}:{number}: {name} is listed twice")
        entries[name] = digest
    if not entries:
        raise AssemblyError(f"{lock}: no jars listed")
    return entries


def _present_jars(directory: Path) -> set[str]:
    return {f"{sub}/{p.name}" for sub in JAR_DIRS if (directory / sub).is_dir()
            for p in (directory / sub).glob("*.jar")}


def verify_jars(directory: Path, expected: dict[str, str], lock: Path = LOCK_FILE) -> None:
    """Check that DIR's jars are exactly the locked ones, with the locked digests."""
    present = _present_jars(directory)
    if unexpected := sorted(present - expected.keys()):
        raise AssemblyError(f"{directory / unexpected[0]}: jar not in the lock {lock} "
                            "(after a version change: neo4j_server.py --write-lock DIR)")
    if missing := sorted(expected.keys() - present):
        raise AssemblyError(f"{directory / missing[0]}: locked jar missing")
    for name, digest in sorted(expected.items()):
        actual = file_digest(directory / name)
        if actual != digest:
            raise AssemblyError(f"{directory / name}: sha256 {actual} does not match the lock {lock} "
                                f"({digest}); delete the jar and assemble again")


def _fetch(directory: Path) -> None:
    """Resolve the dependencies with Maven into DIR/lib and DIR/plugins (stale jars removed)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise AssemblyError("mvn not found on PATH: it is needed to fetch the Neo4j jars")
    for sub in JAR_DIRS:
        shutil.rmtree(directory / sub, ignore_errors=True)
    (directory / "pom.xml").write_text(pom())
    repo = directory / ".m2"
    command = [mvn, "-B", "-q", "-C", "-f", str(directory / "pom.xml"), f"-Dmaven.repo.local={repo}",
               "dependency:copy-dependencies@plugins", "dependency:copy-dependencies@lib"]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise AssemblyError(f"mvn failed ({result.returncode}): {' '.join(command)}\n{tail}")
    shutil.rmtree(repo, ignore_errors=True)


def _compile_launcher(directory: Path) -> None:
    """javac the launcher into DIR/classes unless that copy of the source is current."""
    classes = directory / "classes"
    source = LAUNCHER_SOURCE.read_text()
    copy = classes / LAUNCHER_SOURCE.name
    if (classes / "Neo4jServer.class").exists() and copy.exists() and copy.read_text() == source:
        return
    javac = shutil.which("javac")
    if javac is None:
        raise AssemblyError("javac not found on PATH: a JDK 17+ is needed")
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    command = [javac, "-nowarn", "-d", str(classes), "-cp", str(directory / "lib" / "*"), str(LAUNCHER_SOURCE)]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssemblyError(f"javac failed: {result.stdout}{result.stderr}")
    copy.write_text(source)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One assembly at a time per directory (parallel test workers share a cache)."""
    with open(directory / ".assemble.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def assemble(directory: Path | str, lock: Path = LOCK_FILE) -> Path:
    """Fetch (first time only) and verify the jars in DIR, compile the launcher; return DIR."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    expected = read_lock(lock)
    with _exclusive(directory):
        if _present_jars(directory) != expected.keys():
            _fetch(directory)
        verify_jars(directory, expected, lock)
        _compile_launcher(directory)
    return directory


def write_lock(directory: Path | str, lock: Path = LOCK_FILE) -> Path:
    """Fetch afresh into DIR and write the lock from what arrived (after a version change)."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory):
        _fetch(directory)
        lines = [f"{file_digest(directory / name)}  {name}" for name in sorted(_present_jars(directory))]
    Path(lock).write_text("\n".join(lines) + "\n")
    return Path(lock)


# ---------------------------------------------------------------------------------- running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def java_command(directory: Path, port: int, *, heap: str = "1g",
                 exit_on_stdin_eof: bool = True) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise Neo4jServerError("java not found on PATH: a Java 17+ runtime is needed")
    classpath = os.pathsep.join(str(directory / p) for p in ("classes", "lib/*", "plugins/*"))
    command = [java, "-Xms256m", f"-Xmx{heap}", *_JVM_OPTIONS, "-cp", classpath,
               "Neo4jServer", str(directory), str(port)]
    return command + ["--exit-on-stdin-eof"] if exit_on_stdin_eof else command


def log_tail(directory: Path, lines: int = 40) -> str:
    """The last lines of the launcher's console log and of Neo4j's debug.log."""
    parts = []
    for name in ("console.log", "debug.log"):
        path = directory / "logs" / name
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no logs under {directory / 'logs'})"


@dataclass
class Neo4jServer:
    """A started server: its Bolt URI and the Java process."""

    uri: str
    directory: Path
    """Where its ``data/`` and ``logs/`` are (the assembled DIR unless ``start(state=...)``)."""
    process: subprocess.Popen[bytes] = field(repr=False)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Shut the DBMS down (stdin EOF, else SIGTERM; SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            if self.process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.process.stdin.close()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _wait_ready(server: Neo4jServer, password: str, timeout: float) -> None:
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError, DriverError, Neo4jError

    deadline = time.monotonic() + timeout
    with GraphDatabase.driver(server.uri, auth=(USER, password), connection_timeout=5.0) as driver:
        while True:
            if server.process.poll() is not None:
                raise Neo4jServerError(f"Neo4j exited with {server.process.returncode} before it was ready\n"
                                       + log_tail(server.directory))
            try:
                with driver.session() as session:
                    session.run("RETURN 1").consume()
                return
            except AuthError as e:
                raise Neo4jServerError(f"Neo4j refused the password ({e.message}); {server.directory / 'data'} "
                                       "keeps the password it was created with") from e
            except (DriverError, Neo4jError, OSError):
                pass  # not listening yet, or the databases are still starting
            if time.monotonic() > deadline:
                raise Neo4jServerError(f"Neo4j did not answer within {timeout:.0f}s\n" + log_tail(server.directory))
            time.sleep(0.5)


def start(directory: Path | str, port: int, password: str = PASSWORD, *, heap: str = "1g",
          page_cache: str = "256m", timeout: float = START_TIMEOUT,
          exit_on_stdin_eof: bool = True, state: Path | str | None = None) -> Neo4jServer:
    """Assemble DIR, start the server and wait until it answers a query.

    With ``exit_on_stdin_eof`` (the default) the server's stdin is a pipe held here: it
    exits when this process does, however that happens. ``state``: a directory for
    ``data/`` and ``logs/`` other than DIR (a database :func:`bulk_import` made there).
    """
    if len(password) < 8:
        raise Neo4jServerError("the Neo4j password needs 8 characters or more")
    directory = assemble(directory)
    state = Path(state).resolve() if state is not None else directory
    (state / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NEO4J_PASSWORD=password, NEO4J_PAGECACHE=page_cache, NEO4J_STATE=str(state))
    with open(state / "logs" / "console.log", "wb") as console:
        process = subprocess.Popen(
            java_command(directory, port, heap=heap, exit_on_stdin_eof=exit_on_stdin_eof),
            stdin=subprocess.PIPE if exit_on_stdin_eof else subprocess.DEVNULL,
            stdout=console, stderr=subprocess.STDOUT, cwd=directory, env=env,
        )
    server = Neo4jServer(f"bolt://{HOST}:{port}", state, process)
    try:
        _wait_ready(server, password, timeout)
    except BaseException:
        server.stop(timeout=30)
        raise
    return server


@contextlib.contextmanager
def neo4j_server(directory: Path | str, port: int | None = None, password: str = PASSWORD, *,
                 heap: str = "1g", page_cache: str = "256m", timeout: float = START_TIMEOUT,
                 state: Path | str | None = None) -> Iterator[str]:
    """A server for the ``with`` block; yields ``bolt://127.0.0.1:PORT`` (a free port by default)."""
    server = start(directory, port or free_port(), password, heap=heap, page_cache=page_cache, timeout=timeout,
                   state=state)
    try:
        yield server.uri
    finally:
        server.stop()


def bulk_import(directory: Path | str, state: Path | str, files: Path | str, *, heap: str = "1g") -> str:
    """``neo4j-admin database import full neo4j @import.args`` (the importer ships in the
    ``org.neo4j:neo4j`` jars: ``org.neo4j.cli.AdminTool``), run in ``files`` (what
    ``compgraph export --format neo4j-import`` wrote) into ``state/data``, which must not
    hold a ``neo4j`` database yet; :func:`start` with ``state=`` serves it. Returns the
    importer's output; a failure raises :class:`Neo4jServerError` with its tail."""
    directory = assemble(directory)
    state = Path(state).resolve()
    (state / "conf").mkdir(parents=True, exist_ok=True)
    (state / "conf" / "neo4j.conf").touch()
    java = shutil.which("java")
    if java is None:
        raise Neo4jServerError("java not found on PATH: a Java 17+ runtime is needed")
    command = [java, f"-Xmx{heap}", *_JVM_OPTIONS, "-cp", str(directory / "lib" / "*"), "org.neo4j.cli.AdminTool",
               "database", "import", "full", "neo4j", "@import.args"]
    env = dict(os.environ, NEO4J_HOME=str(state), NEO4J_CONF=str(state / "conf"))
    result = subprocess.run(command, cwd=files, env=env, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise Neo4jServerError(f"the bulk import failed ({result.returncode}):\n{output[-3000:]}")
    return output


# ---------------------------------------------------------------------------------- script


def main(argv: list[str]) -> int:
    usage = ("usage: neo4j_server.py DIR PORT     (password: $NEO4J_PASSWORD, default "
             f"{PASSWORD!r}; heap $NEO4J_HEAP, default 1g; page cache $NEO4J_PAGE_CACHE, default 256m)\n"
             "       neo4j_server.py --write-lock DIR")
    if len(argv) == 2 and argv[0] == "--write-lock":
        print(f"wrote {write_lock(argv[1])}")
        return 0
    if len(argv) != 2 or not argv[1].isdigit():
        print(usage, file=sys.stderr)
        return 2
    stop, ready = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not ready.is_set():  # still starting: abandon the start (start() stops the child)
            raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        server = start(argv[0], int(argv[1]), os.environ.get("NEO4J_PASSWORD") or PASSWORD,
                       heap=os.environ.get("NEO4J_HEAP") or "1g", page_cache=os.environ.get("NEO4J_PAGE_CACHE") or "256m")
    except Neo4jServerError as e:
        print(f"neo4j_server: {e}", file=sys.stderr)
        return 1
    ready.set()
    print(f"ready {server.uri}", flush=True)
    while not stop.is_set() and server.process.poll() is None:
        stop.wait(0.5)
    died = server.process.poll()
    server.stop()
    if died is not None:
        print(f"neo4j_server: Neo4j exited with {died}\n{log_tail(server.directory)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
