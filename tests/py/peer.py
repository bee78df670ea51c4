#!/usr/bin/env python3
"""An independent BOLT 8 / BOLT 1 peer for the interop tests, built on pyln-proto.

It either listens (and prints ``LISTENING <port> <node id>`` once it does) or connects to
our node, then runs one scripted session and exits 0 with ``OK ...`` on stdout, or non-zero
with the reason on stderr:

1. ``init`` both ways: ours is checked to carry the expected chain in ``networks``;
2. our node sends ``--pings`` pings, each answered here with a pong of the size it asks for;
3. this side sends ``--pings`` pings (after an unknown odd message, which our node must
   ignore), each of which must come back as a pong of the right size;
4. this side sends a ``warning`` and our node answers with an ``error`` for all channels.

With 600 pings each way, each direction carries over 1000 messages: both directions'
keys rotate (every 500 messages), which is checked at the end.
"""

import argparse
import io
import socket
import sys

from pyln.proto.message import Message, MessageNamespace
from pyln.proto.wire import LightningServerSocket, PrivateKey, PublicKey, connect

# BOLT 1's messages, as in the spec's CSV extraction.
BOLT1_CSV = """\
msgtype,init,16
msgdata,init,gflen,u16,
msgdata,init,globalfeatures,byte,gflen
msgdata,init,flen,u16,
msgdata,init,features,byte,flen
msgdata,init,tlvs,init_tlvs,
tlvtype,init_tlvs,networks,1
tlvdata,init_tlvs,networks,chains,chain_hash,...
tlvtype,init_tlvs,remote_addr,3
tlvdata,init_tlvs,remote_addr,data,byte,...
msgtype,error,17
msgdata,error,channel_id,channel_id,
msgdata,error,len,u16,
msgdata,error,data,byte,len
msgtype,warning,1
msgdata,warning,channel_id,channel_id,
msgdata,warning,len,u16,
msgdata,warning,data,byte,len
msgtype,ping,18
msgdata,ping,num_pong_bytes,u16,
msgdata,ping,byteslen,u16,
msgdata,ping,ignored,byte,byteslen
msgtype,pong,19
msgdata,pong,byteslen,u16,
msgdata,pong,ignored,byte,byteslen
"""
NS = MessageNamespace(BOLT1_CSV.strip().split("\n"))

# Genesis block hashes as displayed; the wire carries them byte-reversed.
CHAINS = {
    "regtest": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
    "bitcoin": "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
}


class SessionError(Exception):
    pass


def encode(name, **fields):
    out = io.BytesIO()
    Message(NS.get_msgtype(name), **fields).write(out)
    return out.getvalue()


def read(conn):
    raw = conn.read_message()
    msg = Message.read(NS, io.BytesIO(raw))
    if msg is None:
        raise SessionError("empty message")
    return msg, raw


def expect(conn, name):
    msg, raw = read(conn)
    if msg.messagetype.name != name:
        raise SessionError(
            "expected {}, got {} ({})".format(name, msg.messagetype.name, raw.hex())
        )
    return msg.to_py()


def session(conn, args):
    chain = bytes.fromhex(CHAINS[args.network])[::-1]
    rck, sck = conn.rck, conn.sck

    # 1. init both ways (ours: var_onion_optin + static_remotekey + payment_secret
    # compulsory, an unknown odd feature bit 101 that the peer must ignore).
    features = (1 << 8) | (1 << 12) | (1 << 14) | (1 << 101)
    conn.send_message(
        encode(
            "init",
            globalfeatures=b"",
            features=features.to_bytes((features.bit_length() + 7) // 8, "big"),
            tlvs={"networks": {"chains": [chain]}},
        )
    )
    theirs = expect(conn, "init")
    chains = theirs.get("tlvs", {}).get("networks", {}).get("chains", [])
    if chain.hex() not in chains:
        raise SessionError("our chain is not in the peer's networks: {}".format(theirs))
    their_features = int(theirs["features"] or "0", 16) | int(
        theirs["globalfeatures"] or "0", 16
    )

    # 2. The peer pings us.
    for i in range(args.pings):
        ping = expect(conn, "ping")
        n = int(ping["num_pong_bytes"])
        if n < 65532:
            conn.send_message(encode("pong", ignored=bytes(n)))

    # 3. We ping the peer, after an unknown odd message it must ignore.
    conn.send_message(bytes.fromhex("0101") + b"ignore me")
    for i in range(args.pings):
        want = i % 50
        conn.send_message(encode("ping", num_pong_bytes=want, ignored=bytes(4)))
        pong = expect(conn, "pong")
        got = len(bytes.fromhex(pong["ignored"]))
        if got != want:
            raise SessionError("pong {} has {} bytes, asked {}".format(i, got, want))

    # 4. warning -> error.
    conn.send_message(encode("warning", channel_id=bytes(32), data=b"pyln done"))
    err = expect(conn, "error")
    if err["channel_id"] != "00" * 32:
        raise SessionError("error names channel {}".format(err["channel_id"]))
    text = bytes.fromhex(err["data"]).decode("ascii", "replace")

    rotated = conn.rck != rck and conn.sck != sck
    if args.pings * 2 >= 1000 and not rotated:
        raise SessionError("the keys did not rotate")
    print(
        "OK remote={} features={:x} error={!r} rotated={} sn={} rn={}".format(
            conn.remote_pubkey.serializeCompressed().hex(),
            their_features,
            text,
            rotated,
            conn.sn,
            conn.rn,
        ),
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--privkey", required=True, help="our node key, 32 bytes hex")
    p.add_argument("--listen", action="store_true", help="wait for the node to connect")
    p.add_argument("--connect", metavar="HOST:PORT", help="connect to the node")
    p.add_argument("--node-id", help="the node's id (with --connect)")
    p.add_argument("--expect-node-id", help="check the connecting node's id (--listen)")
    p.add_argument("--pings", type=int, default=600)
    p.add_argument("--network", default="regtest", choices=sorted(CHAINS))
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    # Every socket (listening, accepted, connecting) gives up after this long.
    socket.setdefaulttimeout(args.timeout)
    key = PrivateKey(bytes.fromhex(args.privkey))

    if args.listen:
        server = LightningServerSocket(key)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        node_id = key.public_key().serializeCompressed().hex()
        print("LISTENING {} {}".format(server.getsockname()[1], node_id), flush=True)
        conn, _ = server.accept()
        if args.expect_node_id:
            got = conn.remote_pubkey.serializeCompressed().hex()
            if got != args.expect_node_id:
                raise SessionError("connected node is {}, not {}".format(got, args.expect_node_id))
    else:
        host, port = args.connect.rsplit(":", 1)
        conn = connect(key, PublicKey(bytes.fromhex(args.node_id)), host, int(port))
    # pyln writes each message's length and body in two sends: without this, Nagle's
    # algorithm and delayed ACKs cost ~40 ms per message.
    conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    session(conn, args)
    conn.connection.close()


if __name__ == "__main__":
    try:
        main()
    except (SessionError, ValueError, OSError, socket.timeout) as e:
        print("peer.py: {}: {}".format(type(e).__name__, e), file=sys.stderr, flush=True)
        sys.exit(1)
