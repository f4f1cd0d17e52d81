"""A tiny in-memory Confluent Schema Registry, for manual testing of the Kafka scripts only.

The project's real test registry is written in Rust; this one exists so that kafka_produce.py /
kafka_consume.py could be exercised here without a Confluent install. Standard library only.

Usage: python mini_registry.py [--host 127.0.0.1] [--port 0] [--log]
  Prints "registry=http://HOST:PORT" on stdout once listening, then serves until killed (SIGTERM/SIGINT)
  or until stdin reaches EOF when --stdin-lifetime is given.

Endpoints (the subset the confluent-kafka client uses):
  POST /subjects/{subject}/versions     {"schema": str, ["schemaType": "AVRO"]} -> {"id": int}
  POST /subjects/{subject}              lookup -> {"subject", "id", "version", "schema"} or 404 (40403)
  GET  /schemas/ids/{id}                -> {"schema": str}
  GET  /schemas/ids/{id}/subjects       -> [subject, ...]
  GET  /subjects                        -> [subject, ...]
  GET  /subjects/{subject}/versions     -> [1, 2, ...]
  GET  /subjects/{subject}/versions/{n|latest} -> {"subject", "id", "version", "schema"}
Schema ids are global and shared by identical schema strings (after JSON canonicalisation).
"""
import argparse
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CT = "application/vnd.schemaregistry.v1+json"


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.schemas = []            # id-1 -> schema string
        self.by_canon = {}           # canonical json -> id
        self.subjects = {}           # subject -> [id per version]

    @staticmethod
    def canon(schema):
        try:
            return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
        except ValueError:
            return schema

    def register(self, subject, schema):
        with self.lock:
            c = self.canon(schema)
            sid = self.by_canon.get(c)
            if sid is None:
                self.schemas.append(schema)
                sid = self.by_canon[c] = len(self.schemas)
            versions = self.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return sid

    def lookup(self, subject, schema):
        with self.lock:
            sid = self.by_canon.get(self.canon(schema))
            versions = self.subjects.get(subject, [])
            if sid is None or sid not in versions:
                return None
            return self.version_body(subject, versions.index(sid) + 1)

    def version_body(self, subject, version):
        sid = self.subjects[subject][version - 1]
        return {"subject": subject, "id": sid, "version": version, "schema": self.schemas[sid - 1]}


def make_handler(reg, log):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # noqa: D401
            if log:
                sys.stderr.write("[mini-registry] " + (fmt % args) + "\n")

        def send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", CT)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def not_found(self, code, msg):
            self.send(404, {"error_code": code, "message": msg})

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def route(self):
            return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

        def do_POST(self):  # noqa: N802
            parts = self.route()
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                req = self.body()
                if req.get("schemaType", "AVRO") != "AVRO":
                    return self.send(422, {"error_code": 42201, "message": "only AVRO schemas"})
                return self.send(200, {"id": reg.register(parts[1], req["schema"])})
            if len(parts) == 2 and parts[0] == "subjects":
                req = self.body()
                found = reg.lookup(parts[1], req["schema"])
                if found is None:
                    return self.not_found(40403, "Schema not found")
                return self.send(200, found)
            return self.not_found(404, "no such endpoint")

        def do_GET(self):  # noqa: N802
            parts = self.route()
            if parts[:2] == ["schemas", "ids"] and len(parts) >= 3 and parts[2].isdigit():
                sid = int(parts[2])
                if not 1 <= sid <= len(reg.schemas):
                    return self.not_found(40403, "Schema not found")
                if len(parts) == 4 and parts[3] == "subjects":
                    return self.send(200, [s for s, v in reg.subjects.items() if sid in v])
                return self.send(200, {"schema": reg.schemas[sid - 1]})
            if parts == ["subjects"]:
                return self.send(200, sorted(reg.subjects))
            if len(parts) >= 3 and parts[0] == "subjects" and parts[2] == "versions":
                versions = reg.subjects.get(parts[1])
                if versions is None:
                    return self.not_found(40401, "Subject not found")
                if len(parts) == 3:
                    return self.send(200, list(range(1, len(versions) + 1)))
                v = len(versions) if parts[3] in ("latest", "-1") else int(parts[3]) if re.fullmatch(
                    r"\d+", parts[3]) else 0
                if not 1 <= v <= len(versions):
                    return self.not_found(40402, "Version not found")
                return self.send(200, reg.version_body(parts[1], v))
            return self.not_found(404, "no such endpoint")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", action="store_true")
    p.add_argument("--stdin-lifetime", action="store_true", help="exit when stdin reaches EOF")
    args = p.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Registry(), args.log))
    print(f"registry=http://{args.host}:{server.server_address[1]}", flush=True)
    if args.stdin_lifetime:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sys.stdin.read()
        server.shutdown()
    else:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
