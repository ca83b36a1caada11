"""Five canary secrets, one of each awkward shape, for the redaction and secret-leak tests."""

from __future__ import annotations

import json

TOKEN = "cnry_tok_7Qm2Zp9Lx4Vb8Nw3Rt6Yh1Kd5Gf0Sa2Jc"  # noqa: S105 (a canary, 40+ chars)
JSON_BLOB = json.dumps({"canary": "jb-5f1e9c7a", "nested": {"k": "v-83d2", "n": [1, 2]}})
AWKWARD = "cnry%&'\"pa ss+/=?w0rd"
ENV_SECRET = "cnry_env_4Hd8Kq2Wm7Xz1Pv6Tb3Nc9Rf5Jy0Ls"  # noqa: S105 (a service's env secret)


def pem_key() -> str:
    """A real multi-line PEM private key (RSA), made fresh per session."""
    import io

    import paramiko

    key = paramiko.RSAKey.generate(2048)
    out = io.StringIO()
    key.write_private_key(out)
    return out.getvalue()
