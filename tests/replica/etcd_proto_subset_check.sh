#!/usr/bin/env bash
# Checks that proto/etcd (our subset of etcd's API) is wire-compatible with the .proto files
# Debian publishes for etcd 3.4.23: every message, enum, service method and field of ours exists
# in etcd's with the same name, number, label, type and oneof, and no message of ours lacks one
# of etcd's fields. Not a ctest (it downloads three Debian packages: apt-get download, no
# install); run it when proto/etcd or the etcd version changes:
#   tests/replica/etcd_proto_subset_check.sh [DIR]   (DIR: where the packages are, or go)
# Needs protoc, /usr/bin/python3 (no Python protobuf module) and apt-get.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ours=$here/../../proto
work=${1:-$(mktemp -d /tmp/shmdict-etcd-proto-XXXXXX)}
mkdir -p "$work" && cd "$work"
packages=(golang-etcd-server-dev golang-github-gogo-protobuf-dev golang-github-gogo-googleapis-dev)
for p in "${packages[@]}"; do
  ls "$p"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null
  dpkg -x "$p"_*.deb x
done
gocode=x/usr/share/gocode/src
mkdir -p inc/google
ln -sfn "$PWD/$gocode/go.etcd.io/etcd" inc/etcd
ln -sfn "$PWD/$gocode/github.com/gogo/protobuf/gogoproto" inc/gogoproto
ln -sfn "$PWD/$gocode/github.com/gogo/googleapis/google/api" inc/google/api
protoc -I inc -I /usr/include --include_imports --descriptor_set_out=theirs.pb \
  etcd/etcdserver/etcdserverpb/rpc.proto
protoc -I "$ours" --include_imports --descriptor_set_out=ours.pb etcd/etcdserverpb/rpc.proto
for side in theirs ours; do
  protoc -I /usr/include --decode=google.protobuf.FileDescriptorSet \
    google/protobuf/descriptor.proto <$side.pb >$side.txt
done
/usr/bin/python3 - theirs.txt ours.txt <<'PY'
import re, sys

def parse(path):  # protobuf text format -> nested lists of (name, value)
    toks = re.findall(r'"(?:[^"\\]|\\.)*"|[{}]|[A-Za-z_0-9.\-]+:?', open(path).read())
    pos = 0
    def block():
        nonlocal pos
        out = []
        while pos < len(toks):
            t = toks[pos]; pos += 1
            if t == '}':
                return out
            if t.endswith(':'):
                out.append((t[:-1], toks[pos])); pos += 1
            else:
                pos += 1  # '{'
                out.append((t, block()))
        return out
    return block()

def get(b, k): return [v for kk, v in b if kk == k]
def one(b, k): return next(iter(get(b, k)), None)
def name(b): return one(b, 'name').strip('"')

def collect(fds):
    fields, enums, methods = {}, {}, {}
    def message(m, scope):
        full = scope + '.' + name(m)
        fields[full] = {name(f): tuple(one(f, k) for k in
                        ('number', 'label', 'type', 'type_name', 'oneof_index'))
                        for f in get(m, 'field')}
        for e in get(m, 'enum_type'): enum(e, full)
        for n in get(m, 'nested_type'): message(n, full)
    def enum(e, scope):
        enums[scope + '.' + name(e)] = {name(v): one(v, 'number') for v in get(e, 'value')}
    for f in get(fds, 'file'):
        pkg = one(f, 'package').strip('"')
        for m in get(f, 'message_type'): message(m, pkg)
        for e in get(f, 'enum_type'): enum(e, pkg)
        for s in get(f, 'service'):
            for m in get(s, 'method'):
                methods[pkg + '.' + name(s) + '/' + name(m)] = tuple(one(m, k) for k in
                    ('input_type', 'output_type', 'client_streaming', 'server_streaming'))
    return fields, enums, methods

tf, te, tm = collect(parse(sys.argv[1]))
of, oe, om = collect(parse(sys.argv[2]))
bad = []
for m, fs in of.items():
    if m not in tf:
        bad.append('message %s is not etcd\'s' % m); continue
    bad += ['%s.%s: ours %s, etcd\'s %s' % (m, n, v, tf[m].get(n))
            for n, v in fs.items() if tf[m].get(n) != v]
    bad += ['%s lacks etcd\'s field %s' % (m, n) for n in sorted(set(tf[m]) - set(fs))]
bad += ['enum %s: ours %s, etcd\'s %s' % (e, v, te.get(e)) for e, v in oe.items() if te.get(e) != v]
bad += ['method %s: ours %s, etcd\'s %s' % (k, v, tm.get(k)) for k, v in om.items() if tm.get(k) != v]
print('\n'.join(bad) or 'proto/etcd matches etcd 3.4.23: %d messages, %d enums, %d methods'
      % (len(of), len(oe), len(om)))
sys.exit(1 if bad else 0)
PY
