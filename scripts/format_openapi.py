#!/usr/bin/env python3
# Writes openapi.json in its house format: 2-space indent, a value kept on one line while it fits
# in 110 columns. Usage: python3 scripts/format_openapi.py openapi.json openapi.json 110
import json, sys
W = int(sys.argv[3]) if len(sys.argv) > 3 else 100
def inline(v):
    return json.dumps(v, ensure_ascii=False, separators=(', ', ': '))
def fmt(v, ind, prefix_len):
    s = inline(v)
    if not isinstance(v, (dict, list)) or ind + prefix_len + len(s) <= W - 1 or not v:
        return s
    pad = ' ' * (ind + 2)
    if isinstance(v, dict):
        items = [pad + json.dumps(k, ensure_ascii=False) + ': ' + fmt(x, ind + 2, len(json.dumps(k, ensure_ascii=False)) + 2) for k, x in v.items()]
        return '{\n' + ',\n'.join(items) + '\n' + ' ' * ind + '}'
    items = [pad + fmt(x, ind + 2, 0) for x in v]
    return '[\n' + ',\n'.join(items) + '\n' + ' ' * ind + ']'
v = json.load(open(sys.argv[1]))
open(sys.argv[2], 'w').write(fmt(v, 0, 0) + '\n')
