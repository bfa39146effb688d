#!/usr/bin/env python3
"""Regenerates sandbox/src/protobuf_types.txt: the field numbers and types of
the Kubernetes protobuf messages the sandbox decodes.

Go binaries built with gogo-protobuf embed each .proto file's
FileDescriptorProto, gzipped. This reads them out of a kubectl binary (any
version whose API types match the sandbox's), walks the messages reachable
from the roots below, and prints one line per message:

    <full.message.Name> <field>=<number>:<opt|rep|map>:<type> ...

Usage: python3 sandbox/tools/protobuf_types.py /usr/bin/kubectl > sandbox/src/protobuf_types.txt
"""
import re
import sys
import zlib

CORE = "k8s.io.api.core.v1."
ROOTS = [CORE + k for k in [
    "Namespace", "Pod", "Service", "Endpoints", "ConfigMap", "Secret",
    "PersistentVolumeClaim", "PersistentVolume", "Event", "ServiceAccount", "Node"]] + [
    "k8s.io.api.apps.v1.StatefulSet", "k8s.io.api.apps.v1.Deployment",
    "k8s.io.api.apps.v1.ControllerRevision", "k8s.io.api.batch.v1.Job",
    "k8s.io.api.batch.v1.CronJob", "k8s.io.api.coordination.v1.Lease",
    "k8s.io.api.events.v1.Event", "k8s.io.api.policy.v1.PodDisruptionBudget",
    "k8s.io.api.rbac.v1.Role", "k8s.io.api.rbac.v1.RoleBinding",
    "k8s.io.api.rbac.v1.ClusterRole", "k8s.io.api.rbac.v1.ClusterRoleBinding",
    "k8s.io.api.discovery.v1.EndpointSlice",
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "k8s.io.api.autoscaling.v1.Scale",
    "k8s.io.api.authorization.v1.SubjectAccessReview",
    "k8s.io.api.authorization.v1.LocalSubjectAccessReview",
    "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
    "k8s.io.api.authorization.v1.SelfSubjectRulesReview",
    "k8s.io.api.authentication.v1.SelfSubjectReview",
    "k8s.io.api.authentication.v1.TokenRequest",
]
# Decoded by hand in protobuf.rs (their JSON form is not their message form).
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
}
TYPES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
         7: "fixed32", 8: "bool", 9: "string", 11: "msg", 12: "bytes", 13: "uint32",
         14: "enum", 15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64"}


def varint(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def fields(b):
    i, out = 0, []
    while i < len(b):
        key, i = varint(b, i)
        wt = key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.append((key >> 3, v))
    return out


def descriptors(binary):
    for m in re.finditer(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", binary):
        try:
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(binary[m.start():m.start() + 2_000_000])
        except zlib.error:
            continue
        if out[:1] == b"\x0a" and b".proto" in out[2:2 + out[1]]:
            yield out


def main():
    msgs = {}

    def message(b, prefix):
        name, flds, nested, map_entry = None, [], [], False
        for fn, v in fields(b):
            if fn == 1:
                name = v.decode()
            elif fn == 2:
                flds.append(dict(fields(v)))
            elif fn == 3:
                nested.append(v)
            elif fn == 7:
                map_entry = any(ofn == 7 and ov for ofn, ov in fields(v))
        full = f"{prefix}.{name}"
        msgs[full] = (map_entry, [dict(name=d[1].decode(), num=d[3], label=d.get(4, 1), type=TYPES[d[5]],
                                       type_name=d.get(6, b"").decode().lstrip(".")) for d in flds])
        for n in nested:
            message(n, full)

    for fd in descriptors(open(sys.argv[1], "rb").read()):
        parts = fields(fd)
        pkg = next(v.decode() for fn, v in parts if fn == 2)
        for fn, v in parts:
            if fn == 4:
                message(v, pkg)
    seen, stack = set(), list(ROOTS)
    while stack:
        m = stack.pop()
        if m not in seen:
            seen.add(m)
            stack.extend(f["type_name"] for f in msgs[m][1] if f["type"] == "msg")
    for m in sorted(seen):
        map_entry, flds = msgs[m]
        if map_entry or m in SPECIAL:
            continue
        toks = []
        for f in flds:
            t = f["type"]
            if t == "msg":
                entry = msgs[f["type_name"]]
                if entry[0]:
                    v = next(x for x in entry[1] if x["num"] == 2)
                    toks.append(f"{f['name']}={f['num']}:map:{v['type_name'] if v['type'] == 'msg' else v['type']}")
                    continue
                t = f["type_name"]
            toks.append(f"{f['name']}={f['num']}:{'rep' if f['label'] == 3 else 'opt'}:{t}")
        print(m, " ".join(toks))


if __name__ == "__main__":
    main()
