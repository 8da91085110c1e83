#!/usr/bin/env python3
"""ADD/DEL of cni-bridge (+cni-ipam) with ipMasq (and macspoofchk), two binary dirs
alternating in the same run (issue 17: the close of the nftables socket, see
cni-core/src/nft.rs). Runs in a host netns of its own (and 8 pod netns, all deleted at
the end); per invocation: wall from spawn to stdout EOF and to reap, CPU of the process
and its waited children (wait4 rusage), and the CNI_TRACE phases (medians).

Usage (root): scripts/bench-masq-close.py BEFORE_DIR AFTER_DIR [ROUNDS] [gap|b2b]
  gap: 50 ms idle before every invocation (each starts with the kernel idle);
  b2b: blocks of 4 ADD+DEL per binary dir back to back (first of a block not counted).
ALLKEYS=1 prints every phase."""
import ctypes, json, os, statistics, subprocess, sys, tempfile, time

DIRS = {"main": sys.argv[1], "new": sys.argv[2]}
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 30
MODE = sys.argv[4] if len(sys.argv) > 4 else "gap"
pid = os.getpid()
H = f"nfch{pid}"
PODS = [f"nfcp{pid}-{i}" for i in range(8)]
for n in [H] + PODS:
    subprocess.run(["ip", "netns", "add", n], check=True)
libc = ctypes.CDLL(None, use_errno=True)
tmp = tempfile.mkdtemp(prefix="nftclose-")
try:
    fd = os.open(f"/run/netns/{H}", os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0
    os.close(fd)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    def conf(spoof):
        c = {"cniVersion": "1.0.0", "name": "nfcnet", "type": "cni-bridge",
             "bridge": "nfcbr0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "cni-ipam", "subnet": "10.77.0.0/16",
                      "dataDir": f"{tmp}/ipam"}}
        if spoof:
            c["macspoofchk"] = True
        return c

    def invoke(bindir, cmd, cid, pod, body, trace):
        env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
               "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0",
               "CNI_PATH": bindir, "CNI_TRACE": trace, "PATH": "/usr/bin:/bin"}
        t0 = time.perf_counter()
        p = subprocess.Popen([f"{bindir}/cni-bridge"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env)
        p.stdin.write(json.dumps(body).encode())
        p.stdin.close()
        out = p.stdout.read()
        t_eof = time.perf_counter()
        _, status, ru = os.wait4(p.pid, 0)
        t_exit = time.perf_counter()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{cmd} {bindir}: {out!r}")
        phases = {}
        with open(trace) as f:
            for line in f:
                j = json.loads(line)
                if j["pid"] != p.pid:
                    continue
                w, c = phases.get(j["phase"], (0, 0))
                phases[j["phase"]] = (w + j["wall_us"], c + j["cpu_us"])
        os.unlink(trace)
        return out, {"eof": (t_eof - t0) * 1e3, "exit": (t_exit - t0) * 1e3,
                     "cpu": (ru.ru_utime + ru.ru_stime) * 1e3,
                     **{k: v[0] / 1e3 for k, v in phases.items()},
                     **{k + " cpu": v[1] / 1e3 for k, v in phases.items()}}

    samples = {}  # (variant, spoof, cmd) -> list of dicts
    i = 0
    for r in range(ROUNDS):
        for spoof in (False, True):
            order = ["main", "new"] if (r + spoof) % 2 == 0 else ["new", "main"]
            for v in order:
              for k in range(1 if MODE == "gap" else 4):
                i += 1
                pod = PODS[i % len(PODS)]
                cid = f"nfc{pid}x{i}"
                body = conf(spoof)
                trace = f"{tmp}/t{i}"
                if MODE == "gap":
                    time.sleep(0.05)
                out, m = invoke(DIRS[v], "ADD", cid, pod, body, trace)
                if k > 0 or MODE == "gap":
                    samples.setdefault((v, spoof, "ADD"), []).append(m)
                body = dict(body, prevResult=json.loads(out))
                if MODE == "gap":
                    time.sleep(0.05)
                _, m = invoke(DIRS[v], "DEL", cid, pod, body, trace)
                if k > 0 or MODE == "gap":
                    samples.setdefault((v, spoof, "DEL"), []).append(m)
    keys = ["exit", "eof", "cpu", "masq.add", "masq.del", "fd.release-detached",
            "fd.release-detached cpu", "veth.delete-detached"]
    if os.environ.get("ALLKEYS"):
        keys = sorted({k for v in samples.values() for s in v for k in s})
    print(f"rounds={ROUNDS} mode={MODE} load={os.getloadavg()}")
    for spoof in (False, True):
        for cmd in ("ADD", "DEL"):
            print(f"\n{cmd} ipMasq{' + macspoofchk' if spoof else ''}: medians ms (n={len(samples[('main', spoof, cmd)])})")
            print(f"{'':28}{'before':>10}{'after':>10}")
            for k in keys:
                row = []
                for v in ("main", "new"):
                    xs = [s[k] for s in samples[(v, spoof, cmd)] if k in s]
                    row.append(f"{statistics.median(xs):10.3f}" if xs else f"{'-':>10}")
                print(f"{k:28}{''.join(row)}")
finally:
    for n in [H] + PODS:
        subprocess.run(["ip", "netns", "del", n])
    subprocess.run(["rm", "-rf", tmp])
