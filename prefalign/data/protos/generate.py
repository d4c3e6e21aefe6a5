"""Regenerates the ``*_pb2.py`` modules from the ``.proto`` files here.

Run from the repository root after editing a ``.proto`` file::

  python -m prefalign.data.protos.generate

Needs ``grpcio-tools`` (the ``dev`` extra). The generated modules are checked
in so that users need no protobuf compiler. The runtime-version guard that
recent compilers emit is removed: the modules only use the descriptor-pool and
builder APIs, which every protobuf runtime from 4.25 on provides, so pinning
the runtime to the compiler's exact version would only break installs.
"""

import pathlib
import re
import sys

_HERE = pathlib.Path(__file__).resolve().parent
_ROOT = _HERE.parents[2]


def main() -> int:
  from grpc_tools import protoc
  protos = sorted(str(p.relative_to(_ROOT)) for p in _HERE.glob('*.proto'))
  rc = protoc.main(['protoc', f'-I{_ROOT}', f'--python_out={_ROOT}', *protos])
  if rc:
    return rc
  for proto in protos:
    out = _ROOT / proto.replace('.proto', '_pb2.py')
    text = out.read_text()
    text = text.replace(
        'from google.protobuf import runtime_version as _runtime_version\n', '')
    text = re.sub(r'_runtime_version\.ValidateProtobufRuntimeVersion\(.*?\)\n',
                  '', text, flags=re.S)
    text = text.replace('# NO CHECKED-IN PROTOBUF GENCODE\n', '')
    out.write_text(text)
    print(f'wrote {out.relative_to(_ROOT)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
