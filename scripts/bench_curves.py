"""scripts/bench --curves: how cost grows with the work, postfix-rs beside Postfix.

Five curves, each point run on both systems in turn (the first system
alternating from point to point), each with its wall time, the peak RSS
of the mail system's processes (each daemon's own peak too) and their CPU
seconds:

  queue      10k, 100k, 1M deferred messages: `postqueue -p` (time, its
             and showq's peak RSS), `postqueue -f` until every message
             reached an smtp-sink (qmgr's peak RSS), master start until
             the first delivery, `postsuper -d ALL` (master stopped)
  recipients 1, 100, 1,000, 10,000 recipients per message, local
             (bench+N@ywnds.com into one Maildir) and remote (relayed to an
             smtp-sink, which counts the SMTP transactions)
  size       1 KB, 100 KB, 1 MB, 10 MB, 20 MB messages from smtp-source
  sessions   1, 10, 100, 500, 1,000 sessions at once, one message each,
             latency from connect to the `250` after DATA (queue and
             mailbox on new file systems for each run; medians of three
             runs per point)
  latency    one message at a time: connect to `250`, connect to the file
             in Maildir/new

The deep queues are made by each system's own tools, then copied: one
message sent to a relay that refuses connections becomes the system's own
deferred queue file and defer log; the bench writes N copies of both under
new queue IDs (a postfix-rs file gets its ID record and checksum
rewritten), due in a day, so that nothing is delivered before it is asked
to; each fill on a new ext4 file system of its own, mounted over the
queue directory (see FreshFs). It writes docs/CURVES.md (a table per curve) and one log-log chart per
curve in docs/curves/.
"""

import os, pathlib, random, re, resource, shutil, statistics, subprocess, threading, time, zlib

CURVES = ("queue", "recipients", "size", "sessions", "latency")
# What the curves need of both systems beyond the bench's main.cf.
MAIN_CF = """default_process_limit = 1100
smtpd_client_connection_count_limit = 1100
smtpd_recipient_limit = 20000
message_size_limit = 31457280
recipient_delimiter = +
"""


class Sampler:
    """Samples the peak RSS of a system's processes, per process name, and in all."""

    def __init__(self, system):
        self.system, self.peak, self.per_name = system, 0, {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop_flag.set()
        self.thread.join()

    def loop(self):
        while not self.stop_flag.is_set():
            self.sample()
            time.sleep(0.05)

    def sample(self):
        total = 0
        for pid in self.system.pids() + extra_pids(("showq", "postqueue", "postsuper")):
            try:
                status = open(f"/proc/{pid}/status").read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            name = fields.get("Name", "?").strip()
            rss = int(fields.get("VmRSS", "0 kB").split()[0])
            hwm = int(fields.get("VmHWM", "0 kB").split()[0])
            total += rss
            self.per_name[name] = max(self.per_name.get(name, 0), hwm)
        self.peak = max(self.peak, total)


def extra_pids(names):
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() in names:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def daemons(per_name):
    """The daemons' own peaks, largest first: `smtpd 5.1, cleanup 4.0` (MiB)."""
    top = sorted(per_name.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} {kib / 1024:.1f}" for n, kib in top if kib > 0)


def stop(system):
    """Stops the system and waits for its master to be gone (Postfix's stop does not)."""
    pid = system.master_pid()
    system.stop()
    if pid:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 60, f"{system.name}: master did not stop")


def wait_until(cond, limit, what):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done after {limit} s")
        time.sleep(0.02)


def queue_files(system):
    """Messages in the queue: files with the readiness bit (postfix-rs's
    cleanup keeps empty files named ahead of time in incoming/)."""
    n = 0
    for q in ("incoming", "active", "deferred"):
        for root, _, files in os.walk(system.dir / "queue" / q):
            for f in files:
                try:
                    n += bool(os.lstat(os.path.join(root, f)).st_mode & 0o100)
                except FileNotFoundError:
                    pass
    return n


class Point:
    """One measurement: the system's CPU and memory around `with`."""

    def __init__(self, system):
        self.system = system

    def __enter__(self):
        self.cpu0 = self.system.cpu_seconds() + children_cpu()
        self.sampler = Sampler(self.system).__enter__()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.t0
        self.sampler.__exit__()
        self.cpu = self.system.cpu_seconds() + children_cpu() - self.cpu0
        self.peak = self.sampler.peak
        self.per_name = self.sampler.per_name


def children_cpu():
    """CPU of the bench's own finished children (postqueue, postsuper)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --- deep queues ----------------------------------------------------------

def record_end(data, pos):
    """Where the record starting at `pos` ends (Postfix's 7-bit length)."""
    length, shift, i = 0, 0, pos + 1
    while True:
        b = data[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    return i + length, i


class Template:
    """A system's own deferred message and defer log, to copy N times."""

    def __init__(self, system):
        q = system.dir / "queue"
        files = [p for p in (q / "deferred").rglob("*") if p.is_file()]
        if len(files) != 1:
            raise RuntimeError(f"{system.name}: expected one deferred message, found {len(files)}")
        self.path = files[0]
        self.id = self.path.name
        self.data = self.path.read_bytes()
        st = self.path.stat()
        self.uid, self.gid = st.st_uid, st.st_gid
        logs = list((q / "defer").rglob(self.id))
        self.log = logs[0].read_bytes() if logs else None
        # Both write the ID in a log_ident attribute; postfix-rs adds a
        # seventh number to the C record, a CRC-32 of the rest of the file.
        self.ident = f"log_ident={self.id}".encode()
        if self.data[:1] != b"C" or self.ident not in self.data:
            raise RuntimeError(f"{system.name}: {self.path} is not the queue file the bench expects")
        self.c_end, self.c_start = record_end(self.data, 0)
        fields = self.data[self.c_start:self.c_end].split()
        self.checksum = len(fields) == 7
        if self.checksum and int(fields[6]) != zlib.crc32(self.data[self.c_end:]):
            raise RuntimeError(f"{system.name}: the queue file's checksum is not where the bench looks for it")
        # Seven fixed-width numbers and six blanks.
        self.width = (self.c_end - self.c_start - 6) // 7

    def copy(self, qid):
        """postfix-rs's copy under `qid`: its ID record and checksum rewritten."""
        data = self.data.replace(self.ident, f"log_ident={qid}".encode())
        crc = str(zlib.crc32(data[self.c_end:])).rjust(self.width).encode()
        head = data[self.c_start:self.c_end]
        head = head[:len(head) - self.width] + crc
        return data[:self.c_start] + head + data[self.c_end:]


def make_template(system, sink_port):
    """One message from the system's own smtpd, deferred: the relay refuses connections."""
    stop(system)
    shutil.rmtree(system.dir / "queue" / "deferred", ignore_errors=True)
    system.start()
    time.sleep(1)
    subprocess.run(["smtp-source", "-m", "1", "-f", "bench@example.org", "-t", "sink@example.org",
                    f"127.0.0.1:{system.port}"], check=True)
    wait_until(lambda: any(p.is_file() for p in (system.dir / "queue" / "deferred").rglob("*")), 60,
               f"{system.name}: the template message was not deferred")
    time.sleep(0.5)
    stop(system)
    return Template(system)


class FreshFs:
    """A directory of a system on a file system of its own: a new ext4
    (made by mkfs.ext4 as Debian's installer makes one, with a journal) in
    a sparse image file, mounted over it, with the directory's own tree of
    subdirectories (not their files) copied into it when `tree`.

    A directory that held a million files, or any other point's, on the
    machine's file system leaves its traces there (recently deleted inodes
    every new file scans past, blocks to discard): the fills of a deep
    queue slowed down a hundredfold after the 100k point, and each point's
    times depended on what the point before, or the other system, had
    left. A new file system for every point is the same start for both."""

    def __init__(self, system, path, tree=True):
        self.path = path
        self.image = system.dir.parent / f"fs-{system.name}-{path.name}.ext4"
        self.tree = None if tree else []

    def _tree(self):
        """The directory's subdirectories: path, mode, owner."""
        out = []
        for root, dirs, _ in os.walk(self.path):
            for d in dirs:
                path = pathlib.Path(root) / d
                st = path.lstat()
                out.append((path.relative_to(self.path), st.st_mode & 0o7777, st.st_uid, st.st_gid))
        return out

    def make(self):
        """A new, empty file system over the directory (the system stopped)."""
        self.release()
        if self.tree is None:
            self.tree = self._tree()
        st = self.path.stat()
        with open(self.image, "wb") as f:
            f.truncate(24 << 30)
        # An inode per 8 KiB: a million messages are two million files.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-i", "8192", str(self.image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.path)], check=True)
        (self.path / "lost+found").rmdir()
        os.chown(self.path, st.st_uid, st.st_gid)
        os.chmod(self.path, st.st_mode & 0o7777)
        for rel, mode, uid, gid in self.tree:
            path = self.path / rel
            path.mkdir()
            os.chown(path, uid, gid)
            os.chmod(path, mode)

    def release(self):
        """Unmounts and deletes the file system, if one is mounted."""
        if os.path.ismount(self.path):
            subprocess.run(["umount", str(self.path)], check=True)
        self.image.unlink(missing_ok=True)


def fill(system, tmpl, n, due):
    """N copies of the template in deferred/, with their defer logs, due now or in a day.

    Postfix's copies are named as Postfix names a file, microseconds and
    inode number (its `postfix start` renames any other name, a cost the
    copying would add); postfix-rs's get IDs of the template's length,
    written into their ID record."""
    q = system.dir / "queue"
    for sub in ("deferred", "defer"):
        shutil.rmtree(q / sub, ignore_errors=True)
        (q / sub).mkdir()
        os.chown(q / sub, tmpl.uid, tmpl.gid)
        os.chmod(q / sub, 0o700)
        for h in "0123456789ABCDEF":
            (q / sub / h).mkdir()
            os.chown(q / sub / h, tmpl.uid, tmpl.gid)
            os.chmod(q / sub / h, 0o700)
    when = time.time() + (-60 if due else 86400)
    width = len(tmpl.id) - 5
    if tmpl.checksum and 16 ** width < n:
        raise RuntimeError(f"{system.name}: queue IDs of {len(tmpl.id)} characters cannot name {n} files")
    rnd = random.Random(n)
    staging = q / "deferred" / "0" / "bench.tmp"

    def write(path, data, mode):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, data)
        os.fchown(fd, tmpl.uid, tmpl.gid)
        ino = os.fstat(fd).st_ino
        os.close(fd)
        return ino

    for i in range(n):
        usec = rnd.randrange(0x100000)
        if tmpl.checksum:
            qid = f"{usec:05X}{i:0{width}X}"
            write(q / "deferred" / qid[0] / qid, tmpl.copy(qid), 0o700)
        else:
            qid = f"{usec:05X}{write(staging, tmpl.data, 0o700):X}"
            os.rename(staging, q / "deferred" / qid[0] / qid)
        os.utime(q / "deferred" / qid[0] / qid, (time.time(), when))
        if tmpl.log is not None:
            write(q / "defer" / qid[0] / qid, tmpl.log, 0o600)
    # On disk before the point starts: files still in the page cache have
    # no blocks yet, and a deletion that frees no blocks skips the discard
    # (one device round trip per file here), so which system's copies had
    # been written back would decide postsuper's time.
    os.sync()


def empty(system, tmpl):
    """Removes every message and log, the system stopped."""
    q = system.dir / "queue"
    for sub in ("incoming", "active", "deferred", "defer", "bounce", "trace"):
        if (q / sub).exists():
            shutil.rmtree(q / sub)
            (q / sub).mkdir()
            os.chown(q / sub, tmpl.uid, tmpl.gid)
            os.chmod(q / sub, 0o700)


def queue_point(b, system, n, tmpl, sink_port, sent_counter):
    out = {}
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fresh = FreshFs(system, system.dir / "queue")
    try:
        # Listed and deleted on a running system, nothing due.
        fresh.make()
        fill(system, tmpl, n, due=False)
        system.start()
        time.sleep(2)
        listing, rss = b.WORK / "postqueue.out", b.WORK / "postqueue.rss"
        # GNU time reports postqueue's own peak (the bench's fork would
        # count Python's).
        with Point(system) as p, open(listing, "wb") as f:
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *system.tool("postqueue"), "-p"],
                                  stdout=f, stderr=subprocess.DEVNULL)
        with open(listing, "rb") as f:
            f.seek(max(0, listing.stat().st_size - 200))
            last = f.read().decode(errors="replace").strip().splitlines()[-1:]
        if proc.returncode != 0 or not last or f"in {n} Request" not in last[0]:
            raise RuntimeError(f"{system.name}: postqueue -p exited {proc.returncode}, last line {last!r}")
        out["postqueue -p s"] = p.elapsed
        # postqueue's own peak, and showq's (the daemon that reads the queue).
        out["postqueue MiB"] = int(rss.read_text().split()[-1]) / 1024
        out["showq MiB"] = p.per_name.get("showq", 0) / 1024
        with Point(system) as p:
            subprocess.run([*system.tool("postsuper"), "-d", "ALL"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["postsuper -d ALL s"] = p.elapsed
        if queue_files(system):
            raise RuntimeError(f"{system.name}: postsuper -d ALL left files")
        stop(system)
        # Flushed to the sink.
        fresh.make()
        fill(system, tmpl, n, due=False)
        system.start()
        time.sleep(2)
        done = sent_counter(system)
        with Point(system) as p:
            subprocess.run([*system.tool("postqueue"), "-f"], check=True)
            wait_until(lambda: done() >= n, 7200, f"{system.name}: postqueue -f")
            wait_until(lambda: queue_files(system) == 0, 600, f"{system.name}: queue empty")
        out["postqueue -f s"] = p.elapsed
        out["flush CPU s"] = p.cpu
        out["qmgr MiB"] = p.per_name.get("qmgr", 0) / 1024
        stop(system)
        # Started with everything due.
        fresh.make()
        fill(system, tmpl, n, due=True)
        done = sent_counter(system)
        t0 = time.monotonic()
        system.start()
        wait_until(lambda: done() >= 1, 3600, f"{system.name}: first delivery")
        out["start to first delivery s"] = time.monotonic() - t0
        stop(system)
    finally:
        sink.terminate()
        sink.wait()
        stop(system)
        fresh.release()
        # The template's copy in the system's own queue (under the mount
        # until now) goes too.
        empty(system, tmpl)
    return out


# --- the other curves -----------------------------------------------------

def send(b, system, args, count, done, limit=1800):
    """Runs a load client; returns (Point, its stderr) once `done() >= count`."""
    system.clear()
    system.start()
    time.sleep(1)
    with Point(system) as p:
        src = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + limit
        while done() < count:
            if src.poll() not in (None, 0):
                stop(system)
                raise RuntimeError(f"{system.name}: {args[0]} failed: {src.stderr.read()}")
            if time.monotonic() > deadline:
                src.kill()
                stop(system)
                raise RuntimeError(f"{system.name}: {done()} of {count} after {limit} s")
            time.sleep(0.02)
    src.wait()
    stop(system)
    return p


def client(b):
    return str(b.TOP / "target/release/smtp-tls-source")


def recipients_point(b, system, n, remote, sink_port):
    messages = max(1, 2000 // n)
    if remote:
        # Its counters go to a file: a pipe nobody reads would stop it.
        counted = open(b.WORK / "sink-counters.txt", "w+b")
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "1024"],
                                stdout=counted, stderr=subprocess.DEVNULL)
        done, to = b.SentCounter(system.dir / "maillog"), "sink@example.org"
    else:
        done, to = system.delivered, f"{b.USER}@ywnds.com"
    try:
        p = send(b, system, [client(b), "-P", "-s", "1", "-n", "1", "-m", str(messages), "-l", "1024", "-r", str(n),
                             "-f", "bench@example.org", "-t", to, f"127.0.0.1:{system.port}"], messages * n, done)
    finally:
        if remote:
            sink.terminate()
            sink.wait()
            counted.seek(0)
            counters = counted.read().decode(errors="replace")
            counted.close()
    out = {"deliveries/s": messages * n / p.elapsed, "time s": p.elapsed, "peak MiB": p.peak / 1024,
           "CPU s": p.cpu, "daemons": daemons(p.per_name), "messages": messages}
    if remote:
        found = re.findall(r"mesg=(\d+)", counters)
        out["transactions"] = int(found[-1]) if found else 0
    return out


def size_point(b, system, size):
    count = {1024: 2000, 102400: 500, 1048576: 100, 10485760: 20, 20971520: 10}[size]
    p = send(b, system, ["smtp-source", "-s", "4", "-m", str(count), "-l", str(size), "-f", "bench@example.org",
                         "-t", f"{b.USER}@ywnds.com", f"127.0.0.1:{system.port}"], count, system.delivered)
    return {"msg/s": count / p.elapsed, "MB/s": count * size / p.elapsed / 1e6, "peak MiB": p.peak / 1024,
            "CPU s": p.cpu, "CPU ms/msg": p.cpu * 1000 / count, "daemons": daemons(p.per_name)}


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sessions_point(b, system, n):
    count = max(1000, 3 * n)
    lat = b.WORK / "latency.txt"
    # The queue and the mailbox on new file systems: files created right
    # after another point's deletions cost more (see FreshFs), and the
    # tail latency showed whichever system ran second.
    if not (system.dir / "queue").exists():
        # Its tree is made when the system first starts.
        system.start()
        stop(system)
    fresh = [FreshFs(system, system.dir / "queue"), FreshFs(system, system.home, tree=False)]
    try:
        for f in fresh:
            f.make()
        p = send(b, system, [client(b), "-P", "-s", str(n), "-n", "1", "-m", str(count), "-l", "1024", "-L", str(lat),
                             "-f", "bench@example.org", "-t", f"{b.USER}@ywnds.com", f"127.0.0.1:{system.port}"],
                 count, system.delivered)
    finally:
        stop(system)
        for f in fresh:
            f.release()
    us = [int(line.split()[0]) for line in lat.read_text().split("\n") if line]
    return {"msg/s": count / p.elapsed, "p50 ms": percentile(us, 0.5) / 1000, "p99 ms": percentile(us, 0.99) / 1000,
            "peak MiB": p.peak / 1024, "CPU s": p.cpu, "CPU ms/msg": p.cpu * 1000 / count}


def latency_point(b, system):
    count = 300
    lat = b.WORK / "latency.txt"
    p = send(b, system, [client(b), "-P", "-s", "1", "-n", "1", "-m", str(count), "-l", "1024", "-L", str(lat),
                         "-w", str(system.maildir()), "-f", "bench@example.org", "-t", f"{b.USER}@ywnds.com",
                         f"127.0.0.1:{system.port}"], count, system.delivered)
    rows = [tuple(int(x) for x in line.split()) for line in lat.read_text().split("\n") if line]
    acked, filed = [r[0] for r in rows], [r[1] for r in rows]
    return {"250 p50 ms": percentile(acked, 0.5) / 1000, "250 p99 ms": percentile(acked, 0.99) / 1000,
            "Maildir p50 ms": percentile(filed, 0.5) / 1000, "Maildir p99 ms": percentile(filed, 0.99) / 1000,
            "CPU ms/msg": p.cpu * 1000 / count}


# --- the run --------------------------------------------------------------

def run(b, systems, only, depths, header):
    """Runs the curves in `only` on `systems` (Postfix first), writing
    docs/CURVES.md after each; returns its path."""
    # A thousand sessions at once need as many descriptors in the client.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {}
    turn = [0]

    def both(label, fn, rounds=1):
        """The point on every system, the first alternating; with rounds,
        each figure is the median of that many runs (alternated too)."""
        runs = {s.name: [] for s in systems}
        for _ in range(rounds):
            k = turn[0] % len(systems)
            turn[0] += 1
            for s in systems[k:] + systems[:k]:
                runs[s.name].append(fn(s))
                print(f"{label}: {s.name:10} {fmt(runs[s.name][-1])}", flush=True)
        return {name: median_of(r) for name, r in runs.items()}

    def sent_counter(s):
        return b.SentCounter(s.dir / "maillog")

    if "queue" in only:
        templates = {s.name: make_template(s, b.SINK_PORTS[s.name]) for s in systems}
        results["queue"] = [(n, both(f"queue {n}", lambda s, n=n: queue_point(
            b, s, n, templates[s.name], b.SINK_PORTS[s.name], sent_counter))) for n in depths]
        write(b, results, systems, header)
    if "recipients" in only:
        for remote in (False, True):
            key = "recipients (remote)" if remote else "recipients (local)"
            results[key] = [(n, both(f"{key} {n}", lambda s, n=n, remote=remote: recipients_point(
                b, s, n, remote, b.SINK_PORTS[s.name]))) for n in (1, 100, 1000, 10000)]
        write(b, results, systems, header)
    if "size" in only:
        results["size"] = [(n, both(f"size {n}", lambda s, n=n: size_point(b, s, n)))
                           for n in (1024, 102400, 1048576, 10485760, 20971520)]
        write(b, results, systems, header)
    if "sessions" in only:
        # Three rounds: a single run's rate and p99 at 1,000 sessions
        # spread by 20% from run to run, more than the systems differ.
        results["sessions"] = [(n, both(f"sessions {n}", lambda s, n=n: sessions_point(b, s, n), rounds=3))
                               for n in (1, 10, 100, 500, 1000)]
        write(b, results, systems, header)
    if "latency" in only:
        results["latency"] = [(1, both("latency", lambda s: latency_point(b, s)))]
    return write(b, results, systems, header)


def median_of(runs):
    """Each number's median over the runs (text, such as the daemons'
    peaks, is the first run's)."""
    return {key: statistics.median(r[key] for r in runs) if isinstance(value, (int, float)) else value
            for key, value in runs[0].items()}


def fmt(result):
    return "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())


# Per curve: the x axis, and the measures drawn (one line per measure and system).
AXES = {
    "queue": ("deferred messages", ["postqueue -p s", "postqueue -f s", "start to first delivery s",
                                    "postsuper -d ALL s"], ["postqueue MiB", "showq MiB", "qmgr MiB"]),
    "recipients (local)": ("recipients per message", ["time s"], ["peak MiB"]),
    "recipients (remote)": ("recipients per message", ["time s"], ["peak MiB"]),
    "size": ("message size, bytes", ["msg/s"], ["peak MiB"]),
    "sessions": ("sessions at once", ["msg/s", "p50 ms", "p99 ms"], ["peak MiB"]),
}


def write(b, results, systems, header):
    docs = b.TOP / "docs"
    (docs / "curves").mkdir(parents=True, exist_ok=True)
    md = ["# Scale curves: postfix-rs beside Postfix\n\nMade by `scripts/bench --curves` "
          "(see scripts/bench_curves.py for what each point does). Each point ran on both systems in turn, in one run; "
          "times in seconds, memory in MiB (the peak of the sum over the mail system's processes, and each daemon's own "
          "peak), CPU in seconds of the mail system's processes and the bench's own postqueue/postsuper. A run of some "
          "curves keeps the others' sections from earlier runs: each section says when it ran.\n"]
    # The sections of curves not run this time, as an earlier run wrote them.
    kept = {}
    if (docs / "CURVES.md").exists():
        for part in (docs / "CURVES.md").read_text().split("\n## ")[1:]:
            kept[part.split("\n", 1)[0].strip()] = "\n## " + part.rstrip("\n") + "\n"
    for curve in [*AXES, "latency", *(c for c in results if c not in AXES and c != "latency")]:
        if curve not in results:
            if curve in kept:
                md.append(kept[curve])
            continue
        points = results[curve]
        md.append(f"\n## {curve}\n\n{header}\n")
        keys = [k for k in points[0][1][systems[0].name]]
        md.append("| x | system | " + " | ".join(keys) + " |")
        md.append("|---|---|" + "---|" * len(keys))
        for x, row in points:
            for s in systems:
                r = row[s.name]
                md.append(f"| {x:,} | {s.name} | " + " | ".join(
                    f"{r.get(k):.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")
        if curve in AXES:
            name = curve.replace(" ", "-").replace("(", "").replace(")", "")
            chart(curve, points, systems, docs / "curves" / f"{name}.png")
            md.append(f"\n![{curve}](curves/{name}.png)\n")
    (docs / "CURVES.md").write_text("\n".join(md) + "\n")
    return docs / "CURVES.md"


def chart(curve, points, systems, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xlabel, times, mems = AXES[curve]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"Postfix": "--", "postfix-rs": "-"}
    for ax, measures, ylabel in ((axes[0], times, "per measure (log)"), (axes[1], mems, "MiB (log)")):
        for i, m in enumerate(measures):
            for s in systems:
                xs = [x for x, row in points if isinstance(row[s.name].get(m), float) and row[s.name][m] > 0]
                ys = [row[s.name][m] for x, row in points if isinstance(row[s.name].get(m), float) and row[s.name][m] > 0]
                if xs:
                    ax.plot(xs, ys, styles.get(s.name, ":"), marker="o", color=f"C{i}", label=f"{m}, {s.name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{curve}: postfix-rs (solid) and Postfix (dashed), same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
