#!/usr/bin/python3
"""A minimal CRI client for conformance/tests/containerd.rs (there is no crictl in Debian 12).

    cri_client.py SOCKET METHOD < request.json

Compiles cri.proto (beside this file) with Debian's grpc_tools into a temp dir, calls
runtime.v1.RuntimeService/METHOD on the unix socket SOCKET with the request read as
protobuf JSON (json_format, camelCase field names) from stdin, and prints the response as
JSON on stdout. A gRPC error exits 1 with its status code and details on stderr.
"""
import importlib
import json
import os
import shutil
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc


def load_stubs():
    here = os.path.dirname(os.path.abspath(__file__))
    out = tempfile.mkdtemp(prefix="cri-stubs-")
    args = ["protoc", "-I" + here, "--python_out=" + out, "--grpc_python_out=" + out,
            os.path.join(here, "cri.proto")]
    if protoc.main(args) != 0:
        sys.exit("cri_client: protoc failed on cri.proto")
    sys.path.insert(0, out)
    pb, rpc = importlib.import_module("cri_pb2"), importlib.import_module("cri_pb2_grpc")
    return out, pb, rpc


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sock, method = sys.argv[1], sys.argv[2]
    out, pb, rpc = load_stubs()
    try:
        req_type = getattr(pb, method + "Request")
        req = json_format.Parse(sys.stdin.read() or "{}", req_type())
        with grpc.insecure_channel("unix://" + sock) as ch:
            stub = rpc.RuntimeServiceStub(ch)
            try:
                resp = getattr(stub, method)(req, timeout=120)
            except grpc.RpcError as e:
                print(f"cri_client: {method}: {e.code().name}: {e.details()}", file=sys.stderr)
                sys.exit(1)
        print(json.dumps(json_format.MessageToDict(resp, including_default_value_fields=True)))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
