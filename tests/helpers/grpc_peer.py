#!/usr/bin/python3
"""A Python grpcio peer for the interop specs, using stubs generated at test time from
proto/message.proto (see helpers/grpc_py.lua).

  grpc_peer.py STUBDIR call TARGET Service.Method JSON_REQUEST [TIMEOUT_S]
      prints {"ok": true, "reply": {...}} or {"ok": false, "code": "UNIMPLEMENTED", "details": ...}
  grpc_peer.py STUBDIR raw TARGET /full/method/path
      calls a method path the proto does not define, prints the status as above
  grpc_peer.py STUBDIR serve PORTFILE
      serves StatusService (GetChatServer echoes uid into token, Login answers 1010) until killed
"""
import json
import os
import sys
from concurrent import futures

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
import message_pb2  # noqa: E402
import message_pb2_grpc  # noqa: E402


def out(obj):
    print(json.dumps(obj), flush=True)


def auth():
    """The metadata of our roles' shared secret (CHATHOST_GRPC_SECRET), if any."""
    secret = os.environ.get("CHATHOST_GRPC_SECRET")
    return [("authorization", "Bearer " + secret)] if secret else None


def call(target, method, request_json, timeout):
    service, name = method.split(".")
    channel = grpc.insecure_channel(target)
    stub = getattr(message_pb2_grpc, service + "Stub")(channel)
    rpc = getattr(stub, name)
    desc = message_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[name]
    req_cls = getattr(message_pb2, desc.input_type.name)
    req = json_format.ParseDict(json.loads(request_json), req_cls())
    try:
        rsp = rpc(req, timeout=timeout, metadata=auth())
        out({"ok": True, "reply": json_format.MessageToDict(
            rsp, preserving_proto_field_name=True, including_default_value_fields=True)})
    except grpc.RpcError as e:
        out({"ok": False, "code": e.code().name, "details": e.details()})


def raw(target, path):
    channel = grpc.insecure_channel(target)
    fn = channel.unary_unary(path)
    try:
        fn(b"", timeout=5, metadata=auth())
        out({"ok": True})
    except grpc.RpcError as e:
        out({"ok": False, "code": e.code().name, "details": e.details()})


class Status(message_pb2_grpc.StatusServiceServicer):
    def GetChatServer(self, request, context):
        return message_pb2.GetChatServerRsp(error=0, host="py", port="1", token="uid-%d" % request.uid)

    def Login(self, request, context):
        return message_pb2.LoginRsp(error=1010, uid=request.uid, token=request.token)


def serve(portfile):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    message_pb2_grpc.add_StatusServiceServicer_to_server(Status(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(portfile + ".tmp", "w") as f:
        f.write(str(port))
    import os
    os.rename(portfile + ".tmp", portfile)
    server.wait_for_termination()


if __name__ == "__main__":
    mode = sys.argv[2]
    if mode == "call":
        call(sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]) if len(sys.argv) > 6 else 5)
    elif mode == "raw":
        raw(sys.argv[3], sys.argv[4])
    elif mode == "serve":
        serve(sys.argv[3])
