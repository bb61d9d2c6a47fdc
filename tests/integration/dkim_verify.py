"""Verifies every DKIM-Signature of a message with dkimpy (an independent implementation),
fetching the public keys from a DNS server with dnspython: `dkim_verify.py FILE.eml PORT`
asks 127.0.0.1:PORT. Prints a JSON list, one entry per signature: {"d", "s", "a", "ok", "error"}."""
import json
import sys

import dkim
import dns.message
import dns.query
import dns.rdatatype


def txt_lookup(port):
    def lookup(name, timeout=5):
        qname = name.decode() if isinstance(name, bytes) else name
        answer = dns.query.udp(dns.message.make_query(qname, dns.rdatatype.TXT), "127.0.0.1", port=port, timeout=timeout)
        for rrset in answer.answer:
            for rr in rrset:
                if rr.rdtype == dns.rdatatype.TXT:
                    return b"".join(rr.strings)
        return None
    return lookup


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    message = open(path, "rb").read()
    d = dkim.DKIM(message)
    signatures = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    out = []
    for idx, sig in enumerate(signatures):
        tags = dkim.util.parse_tag_value(b"".join(sig.split()))
        try:
            ok, error = bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=txt_lookup(port))), None
        except dkim.DKIMException as e:  # e.g. "body hash mismatch"
            ok, error = False, str(e)
        out.append({"d": tags[b"d"].decode(), "s": tags[b"s"].decode(), "a": tags[b"a"].decode(), "ok": ok, "error": error})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
