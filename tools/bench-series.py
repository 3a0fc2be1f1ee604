# The client half of tools/bench-series: one keep-alive connection over the Unix socket.
import http.client, json, os, socket, statistics, sys, time

sock_path, token, base, label = sys.argv[1:5]

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

conn = UnixConnection(sock_path)
headers = {"Authorization": "Bearer " + token}

def get(path):
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    t1, total = None, 0
    while True:
        chunk = r.read(1 << 20)
        if t1 is None:
            t1 = time.perf_counter()
        if not chunk:
            break
        total += len(chunk)
    assert r.status == 200, (path, r.status)
    return time.perf_counter() - t0, t1 - t0, total

def series_path(manifest):
    f = json.load(open(manifest))["files"][0]
    return f"/dicom-web/studies/{f['study_uid']}/series/{f['series_uid']}"

ct, few = series_path(os.path.join(base, "ct.json")), series_path(os.path.join(base, "few.json"))
if label == "loop":
    end = time.perf_counter() + float(sys.argv[6])
    while time.perf_counter() < end:
        get(ct); get(few)
    sys.exit(0)
get(ct); get(few)  # warm the page cache and the server
runs = [get(ct) for _ in range(5)]
best = min(runs, key=lambda r: r[0])
med = statistics.median(r[0] for r in runs)
mb = best[2] / 1e6
small = sorted(get(few) for _ in range(30))
p90 = small[int(0.9 * (len(small) - 1))]
files = [os.path.join(base, "ct", f) for f in sorted(os.listdir(os.path.join(base, "ct")))]
for f in files: open(f, "rb").read()
t0 = time.perf_counter(); n = sum(len(open(f, "rb").read()) for f in files); t = time.perf_counter() - t0
print(f"{label}: CT 300 × 512² ({mb:.1f} MB) best {mb / best[0]:6.1f} MB/s first byte {best[1] * 1000:5.2f} ms, "
      f"median {mb / med:6.1f} MB/s | 50 × 256² ({small[0][2] / 1e6:.1f} MB) median {statistics.median(r[0] for r in small) * 1000:6.2f} ms "
      f"p90 {p90[0] * 1000:6.2f} ms first byte {statistics.median(r[1] for r in small) * 1000:5.2f} ms | page cache {n / t / 1e6:6.0f} MB/s", flush=True)
