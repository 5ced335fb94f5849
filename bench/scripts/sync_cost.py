#!/usr/bin/env python3
"""Time one incremental /sync that delivers one new message, as a room's history grows.

Two members of the same room are compared: one that never sent a read receipt, and one whose
m.read receipt is on the latest event. The difference is the cost of the unread notification
count, which the server computes on every /sync response that includes the room.

Usage: sync_cost.py [BASE_URL]   (default http://127.0.0.1:18448; loopback hosts only)
The server must allow open registration (m.login.dummy). Only the Python standard library is
used, and each run registers three users with a random prefix and creates one room.
"""

import ipaddress
import json
import random
import string
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOM_SIZES = (0, 100, 500, 1000, 2000, 4000)
REPEATS = 5


def loopback_base(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if parsed.scheme != "http" or not loopback:
        sys.exit(f"{url!r} is rejected: only http:// URLs on 127.0.0.0/8, [::1] or localhost")
    return url.rstrip("/") + "/_matrix/client/v3"


class Client:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method, path, token=None, body=None, query=None):
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with self.opener.open(request) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def register(self, username):
        body = {"username": username, "password": "password-" + username}
        _, challenge = self.call("POST", "/register", body=body)
        body["auth"] = {"type": "m.login.dummy", "session": challenge["session"]}
        status, response = self.call("POST", "/register", body=body)
        if status != 200:
            sys.exit(f"registration of {username} failed with HTTP {status}: {response}")
        return response["access_token"]


def main():
    client = Client(loopback_base(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18448"))
    run_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    sender = client.register(f"synccost-{run_id}-sender")
    unread_member = client.register(f"synccost-{run_id}-unread")
    read_member = client.register(f"synccost-{run_id}-read")

    _, created = client.call("POST", "/createRoom", sender, {"preset": "public_chat"})
    room = urllib.parse.quote(created["room_id"], safe="")
    for token in (unread_member, read_member):
        client.call("POST", f"/rooms/{room}/join", token, {})
    sync_filter = json.dumps({"room": {"timeline": {"limit": 100}}})
    txn_counter = 0

    def send():
        nonlocal txn_counter
        txn_counter += 1
        content = {"msgtype": "m.text", "body": f"message {txn_counter}"}
        status, response = client.call(
            "PUT", f"/rooms/{room}/send/m.room.message/t{txn_counter}", sender, content
        )
        if status != 200:
            sys.exit(f"sending failed with HTTP {status}: {response}")
        return response["event_id"]

    def sync(token, since=None):
        query = {"filter": sync_filter, "timeout": "0"}
        if since:
            query["since"] = since
        started = time.perf_counter()
        _, response = client.call("GET", "/sync", token, query=query)
        return response["next_batch"], (time.perf_counter() - started) * 1000

    def time_one_new_event(token, mark_read):
        since, _ = sync(token)
        event_id = send()
        if mark_read:
            quoted = urllib.parse.quote(event_id, safe="")
            client.call("POST", f"/rooms/{room}/receipt/m.read/{quoted}", token, {})
        # The same `since` each time, so every request delivers the one new event.
        return min(sync(token, since)[1] for _ in range(REPEATS))

    size = 0
    print("messages in room | /sync ms, member without receipt | /sync ms, member with receipt")
    for target in ROOM_SIZES:
        while size < target:
            send()
            size += 1
        unread_ms = time_one_new_event(unread_member, mark_read=False)
        read_ms = time_one_new_event(read_member, mark_read=True)
        size += 2
        print(f"{size:16d} | {unread_ms:32.2f} | {read_ms:29.2f}", flush=True)


if __name__ == "__main__":
    main()
