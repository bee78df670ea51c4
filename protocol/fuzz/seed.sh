#!/bin/sh
# Writes the seed corpora of the fuzz targets (not committed: fuzz/corpus is git-ignored):
#   corpus/decode/  one file per distinct request or reply message of the Core Lightning golden
#                   conformance file (2-byte type + body, no length prefix), and of the messages
#                   of the VLS recordings;
#   corpus/frame/   per golden case, its requests and replies as one stream of length-prefixed
#                   frames (also cut inside the last frame), and each VLS recording as it was.
# Usage: protocol/fuzz/seed.sh   (from anywhere; needs python3)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data="$here/../../tests/data/conformance"
exec python3 - "$data" "$here/corpus" <<'PY'
import glob, hashlib, json, os, struct, sys

data, out = sys.argv[1], sys.argv[2]
dec, fra = os.path.join(out, "decode"), os.path.join(out, "frame")
os.makedirs(dec, exist_ok=True)
os.makedirs(fra, exist_ok=True)

def put(d, b):
    # Named by content, like libFuzzer's own corpus files, so reruns do not duplicate.
    with open(os.path.join(d, hashlib.sha1(b).hexdigest()), "wb") as f:
        f.write(b)

def frame(m):
    return struct.pack(">I", len(m)) + m

msgs = set()
streams = []
golden = json.load(open(os.path.join(data, "cln-hsmd-golden.json")))
for case in golden["cases"]:
    stream = b""
    for step in case["steps"]:
        for k in ("request", "reply"):
            if step.get(k):
                m = bytes.fromhex(step[k])
                msgs.add(m)
                stream += frame(m)
    if stream:
        streams.append(stream)
        streams.append(stream[:-1])  # ends inside a frame

# VLS recordings: two lines per frame, the length then the message, in hex.
for path in sorted(glob.glob(os.path.join(data, "vls-recorded", "*.hex"))):
    lines = [l.strip() for l in open(path) if l.strip()]
    stream = bytes.fromhex("".join(lines))
    streams.append(stream)
    for m in lines[1::2]:
        msgs.add(bytes.fromhex(m))

for m in msgs:
    put(dec, m)
for s in streams:
    put(fra, s)
print(f"{len(msgs)} seeds in {dec}, {len(set(streams))} in {fra}")
PY
