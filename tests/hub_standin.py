"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests with no network.

It answers the part of the Hub's HTTP API that ``huggingface_hub`` uses for what smallbench does there (create a
dataset repo, list its files, pre-upload and commit small files, repo info, ``resolve`` downloads), keeping every
commit so that any sha resolves, as on the Hub. Clients reach it through ``HF_ENDPOINT``. Writes need
``Authorization: Bearer <token>``; the tokens a request carried are kept in ``seen_tokens`` so a test can check
that the real library sent them (and that smallbench never printed them). Small files only (no LFS, no Xet).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

KINDS = {"models": "model", "datasets": "dataset"}


def git_blob_oid(data: bytes) -> str:
    """The id git (and the Hub) gives a regular file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> the files at that commit
    main: str = ""

    def commit(self, files: dict[str, bytes]) -> str:
        tree = "".join(f"{p}\0{git_blob_oid(b)}\n" for p, b in sorted(files.items()))
        sha = hashlib.sha1(f"{len(self.commits)}\0{self.main}\0{tree}".encode()).hexdigest()
        self.commits[sha] = files
        self.main = sha
        return sha

    def at(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        sha = self.main if rev == "main" else rev
        return (sha, self.commits[sha]) if sha in self.commits else None


class HubStandin:
    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.seen_tokens: set[str] = set()
        self.lock = threading.Lock()

    def add(self, kind: str, repo_id: str, files: dict[str, bytes]) -> str:
        """A repo holding ``files`` (a test's fixture); returns its commit."""
        return self.repos.setdefault((kind, repo_id), Repo()).commit(dict(files))


def _handler(hub: HubStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  error_code: str | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if error_code:
                self.send_header("X-Error-Code", error_code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj: object, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                hub.seen_tokens.add(auth.removeprefix("Bearer "))
            if auth != f"Bearer {hub.token}":
                self._json({"error": "Invalid credentials in Authorization header"}, 401)
                return False
            return True

        def _repo(self, kind: str, repo_id: str, rev: str) -> tuple[Repo, str, dict[str, bytes]] | None:
            repo = hub.repos.get((kind, repo_id))
            if repo is None:
                self._send(404, b"Repository not found", error_code="RepoNotFound")
                return None
            found = repo.at(rev)
            if found is None:
                self._send(404, b"Invalid rev id", error_code="RevisionNotFound")
                return None
            return repo, *found

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            with hub.lock:
                if parts[0] == "api" and len(parts) in (4, *range(6, 99)) and parts[1] in KINDS:
                    # /api/{kind}s/{org}/{name}[/{revision|tree}/{rev}[/path]]
                    kind, repo_id = KINDS[parts[1]], "/".join(parts[2:4])
                    what, rev = (parts[4], parts[5]) if len(parts) > 4 else ("revision", "main")
                    found = self._repo(kind, repo_id, rev)
                    if found is None:
                        return
                    _, sha, files = found
                    if what == "revision":
                        return self._json({"id": repo_id, "sha": sha, "private": False, "gated": False,
                                           "siblings": [{"rfilename": p} for p in sorted(files)]})
                    if what == "tree":
                        return self._json([{"type": "file", "path": p, "size": len(b), "oid": git_blob_oid(b)}
                                           for p, b in sorted(files.items())])
                # /{datasets/}{org}/{name}/resolve/{rev}/{path}
                kind = "model"
                if parts[0] in KINDS:
                    kind, parts = KINDS[parts[0]], parts[1:]
                if len(parts) >= 5 and parts[2] == "resolve":
                    found = self._repo(kind, "/".join(parts[:2]), parts[3])
                    if found is None:
                        return
                    _, sha, files = found
                    path = "/".join(parts[4:])
                    if path not in files:
                        return self._send(404, b"Entry not found", error_code="EntryNotFound")
                    data = files[path]
                    return self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"'})
            self._send(404, b"not served by the stand-in")

        def do_POST(self) -> None:
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._authorised():
                return
            with hub.lock:
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(body)
                    name = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    key = (req.get("type") or "model", name)
                    url = f"http://{self.headers['Host']}/{'' if key[0] == 'model' else key[0] + 's/'}{name}"
                    if key in hub.repos:
                        return self._json({"error": "You already created this repo", "url": url}, 409)
                    hub.add(*key, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
                    return self._json({"url": url, "name": name})
                if parts[0] == "api" and len(parts) == 6 and parts[1] in KINDS:
                    kind, repo_id, what, rev = KINDS[parts[1]], "/".join(parts[2:4]), parts[4], parts[5]
                    found = self._repo(kind, repo_id, rev)
                    if found is None:
                        return
                    repo, sha, files = found
                    if what == "preupload":
                        return self._json({"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                             "oid": git_blob_oid(files[f["path"]]) if f["path"] in files else None}
                            for f in json.loads(body)["files"]]})
                    if what == "commit":
                        new = dict(files)
                        for line in body.splitlines():
                            op = json.loads(line)
                            if op["key"] == "file":
                                new[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
                            elif op["key"] == "deletedFile":
                                new.pop(op["value"]["path"], None)
                            elif op["key"] != "header":
                                return self._json({"error": f"the stand-in does not take '{op['key']}'"}, 400)
                        oid = repo.commit(new)
                        return self._json({"commitOid": oid, "success": True,
                                           "commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{oid}"})
            self._send(404, b"not served by the stand-in")

    return Handler


@contextlib.contextmanager
def hub_standin(token: str) -> Iterator[tuple[HubStandin, str]]:
    """A running stand-in and its endpoint (``http://127.0.0.1:PORT``) until the block ends."""
    hub = HubStandin(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
