#!/usr/bin/env python3
"""Measures the follow delay of two deskprov servers on one PostgreSQL database: a write
acknowledged by server A, then how long until server B serves it (B polled over one
keep-alive HTTPS connection). Bounded: N writes, each waited for at most 10 s.

  scripts/pg-follow-delay.py A_ADMIN_URL A_CA B_ADMIN_URL B_CA TOKEN [N]
"""
import http.client, json, ssl, statistics, sys, time, urllib.parse

def conn(url, ca):
    u = urllib.parse.urlparse(url)
    ctx = ssl.create_default_context(cafile=ca)
    return http.client.HTTPSConnection(u.hostname, u.port, context=ctx)

def call(c, token, method, path, body=None):
    h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    r.read()
    return r.status

a_url, a_ca, b_url, b_ca, token = sys.argv[1:6]
n = int(sys.argv[6]) if len(sys.argv) > 6 else 50
a, b = conn(a_url, a_ca), conn(b_url, b_ca)
group = "delay%d" % int(time.time())
assert call(a, token, "POST", "/api/v1/groups", {"id": group, "sip": {"domain": "d.example"}}) == 201
delays = []
for i in range(n):
    ext = str(1000 + i)
    assert call(a, token, "POST", "/api/v1/groups/%s/users" % group, {"extension": ext}) == 201
    t0 = time.monotonic()
    while call(b, token, "GET", "/api/v1/groups/%s/users/%s" % (group, ext)) != 200:
        if time.monotonic() - t0 > 10:
            sys.exit("B did not serve write %d within 10 s" % i)
    delays.append((time.monotonic() - t0) * 1000)
    time.sleep(0.05)
delays.sort()
print("follow delay over %d writes: median %.1f ms, p90 %.1f ms, max %.1f ms" % (
    n, statistics.median(delays), delays[int(0.9 * (n - 1))], delays[-1]))
