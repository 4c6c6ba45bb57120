"""LoopbackHub: a test double of the Hugging Face Hub's HTTP API, served on 127.0.0.1.

It is not a Hub. It answers the requests that the real ``huggingface_hub`` (2.4) and ``datasets`` (5.2)
clients make to create a repo, push files to it (regular and Git LFS uploads, no Xet) and read them back,
so tests can run those clients unchanged without network access. Point the clients at it with
``HF_ENDPOINT=hub.endpoint``, a dummy ``HF_TOKEN`` and ``HF_HUB_DISABLE_XET=1`` (the ``hub`` fixture in
``conftest.py`` does this, including the constants the libraries computed at import time).

Endpoints (``{t}`` is ``models``, ``datasets`` or ``spaces``; ``{p}`` is empty, ``datasets/`` or ``spaces/``):

- ``GET /api/whoami-v2``: the user ``someone`` for any bearer token.
- ``GET /api/agent-harnesses``: an empty registry (asked once per process when telemetry is on).
- ``POST /api/repos/create``: 409 with the repo ``url`` if it exists (what ``exist_ok=True`` expects).
- ``POST /api/validate-yaml``: checks that the README front matter is a YAML mapping.
- ``GET /api/{t}/{ns}/{name}`` and ``.../revision/{rev}``: repo info (sha, siblings, cardData).
- ``GET /api/{t}/{ns}/{name}/tree/{rev}[/{path}]``: with ``recursive`` and ``expand``.
- ``POST /api/{t}/{ns}/{name}/paths-info/{rev}``: form fields ``paths`` and ``expand``.
- ``GET /api/{t}/{ns}/{name}/commits/{rev}``: history, newest first.
- ``POST /api/{t}/{ns}/{name}/preupload/{rev}``: upload mode (lfs or regular) and the remote oid.
- ``POST /api/{t}/{ns}/{name}/commit/main``: ndjson header, file, lfsFile, deletedFile, deletedFolder
  lines; a stale ``parentCommit`` answers 412.
- ``POST /{p}{ns}/{name}.git/info/lfs/objects/batch``: basic transfer to the upload URL below.
- ``PUT /loopback-lfs/{sha256}``: stands in for the presigned S3 URL (no auth, content must match).
- ``GET`` and ``HEAD /{p}{ns}/{name}/resolve/{rev}/{path}``: the file, with X-Repo-Commit, ETag,
  X-Linked-Etag/X-Linked-Size for LFS files, and Range requests (206).

A revision is ``main`` (the only branch) or a commit sha this server returned. Errors carry the
``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that the client maps to
its exception classes. Writes (create, preupload, LFS batch, commit) need an ``Authorization: Bearer``
header and answer 401 without one; reads are anonymous except for private repos. Set ``fail_commits``
to make the commit endpoint answer 500.

Storage, under a temporary directory: file contents in ``blobs/{sha256}``; each repo in
``repos/{type}/{ns}/{name}.json`` with its commits, each commit listing its files (path -> sha256, size,
LFS or not, last commit that changed it). A new repo starts with one commit holding ``.gitattributes``,
as on the Hub. Files named like ``LFS_SUFFIXES``, binary files and files of 10 MiB or more go through LFS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "someone"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (
    ".parquet",
    ".arrow",
    ".bin",
    ".safetensors",
    ".gguf",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".onnx",
    ".npy",
    ".npz",
    ".pkl",
    ".zip",
    ".gz",
    ".tar",
    ".zst",
    ".png",
    ".jpg",
    ".jpeg",
    ".wav",
    ".mp3",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
SHA256 = re.compile(r"[0-9a-f]{64}")
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")

_API_REPO = re.compile(
    r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)"
    r"(?:/(revision|tree|paths-info|commits|preupload|commit)/([^/]+)(/.*)?)?$"
)
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch$")
_LFS_UPLOAD = re.compile(r"^/loopback-lfs/([0-9a-f]{64})$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")


class HubError(Exception):
    """An HTTP error answer: JSON ``{"error": message}`` plus the ``X-Error-*`` headers the client reads."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        header_message = message.encode("ascii", "backslashreplace").decode()  # HTTP headers are latin-1
        self.headers = {
            "X-Error-Message": header_message,
            **({"X-Error-Code": code} if code else {}),
            **(headers or {}),
        }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _front_matter(readme: str) -> Any:
    """The YAML block at the top of a README (None without one); raises yaml.YAMLError if it is malformed."""
    match = YAML_BLOCK.search(readme)
    return yaml.safe_load(match.group(2)) if match else None


def _upload_mode(path: str, size: int, sample: bytes) -> str:
    """LFS for the suffixes .gitattributes names, for binary content (a NUL byte) and for big files."""
    is_binary = b"\0" in sample
    return "lfs" if path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or is_binary else "regular"


def _flag(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true")


class LoopbackHub:
    """The server: ``start()``/``stop()`` or ``with LoopbackHub() as hub: ...``; ``hub.endpoint`` to connect to."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="loopback-hub-")) if root is None else Path(root)
        self.fail_commits = False
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("LoopbackHub is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="loopback-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------------------------------

    def repo_files(self, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
        """Path -> content of every file at the head of ``main``; KeyError if the repo does not exist."""
        with self._lock:
            repo = self._load(repo_type, repo_id)
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r}")
            files = repo["commits"][repo["head"]]["files"]
            return {path: self._read_blob(entry["sha256"]) for path, entry in sorted(files.items())}

    # -- storage -----------------------------------------------------------------------------------------------

    def _repo_file(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / f"{repo_id}.json"

    def _load(self, repo_type: str, repo_id: str) -> dict[str, Any] | None:
        if not all(REPO_NAME.match(part) for part in repo_id.split("/")):  # also keeps paths inside root
            return None
        path = self._repo_file(repo_type, repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def _save(self, repo: dict[str, Any]) -> None:
        path = self._repo_file(repo["type"], repo["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(repo, indent=1))
        tmp.replace(path)

    def _blob_file(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def _store_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self._blob_file(sha256)
        if not path.is_file():
            tmp = path.with_name(f"{sha256}.{threading.get_ident()}.tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha256

    def _read_blob(self, sha256: str) -> bytes:
        return self._blob_file(sha256).read_bytes()

    # -- repo model --------------------------------------------------------------------------------------------

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> dict[str, Any] | None:
        """Create the repo with its initial commit; None if it already exists."""
        with self._lock:
            if self._load(repo_type, repo_id) is not None:
                return None
            repo = {
                "type": repo_type,
                "id": repo_id,
                "private": private,
                "created_at": _now(),
                "head": None,
                "commits": {},
            }
            entry = {"sha256": self._store_blob(GITATTRIBUTES), "size": len(GITATTRIBUTES), "lfs": False}
            self._add_commit(repo, {".gitattributes": entry}, "initial commit", "")
            return repo

    def _add_commit(self, repo: dict[str, Any], files: dict[str, dict], title: str, message: str) -> str:
        """Record a commit with ``files`` on top of the head, stamp changed files with it, move main to it."""
        parent = repo["head"]
        seed = json.dumps([repo["type"], repo["id"], parent, files, title, _now(), len(repo["commits"])])
        commit_id = hashlib.sha1(seed.encode()).hexdigest()
        previous = repo["commits"][parent]["files"] if parent else {}
        for path, entry in files.items():
            old = previous.get(path)
            unchanged = old is not None and (old["sha256"], old["lfs"]) == (entry["sha256"], entry["lfs"])
            entry["last_commit"] = old["last_commit"] if unchanged else commit_id
        repo["commits"][commit_id] = {
            "id": commit_id,
            "parent": parent,
            "title": title,
            "message": message,
            "date": _now(),
            "files": files,
        }
        repo["head"] = commit_id
        self._save(repo)
        return commit_id

    def _repo(self, repo_type: str, repo_id: str, authorized: bool) -> dict[str, Any]:
        repo = self._load(repo_type, repo_id)
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        if repo["private"] and not authorized:
            raise HubError(401, "Invalid username or password.", "RepoNotFound")
        return repo

    @staticmethod
    def _commit_at(repo: dict[str, Any], revision: str) -> dict[str, Any]:
        if revision == "main":
            return repo["commits"][repo["head"]]
        if revision in repo["commits"]:
            return repo["commits"][revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _file_info(self, repo: dict[str, Any], path: str, entry: dict, expand: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"type": "file", "path": path, "size": entry["size"]}
        if entry["lfs"]:
            pointer = _lfs_pointer(entry["sha256"], entry["size"])
            info["oid"] = _git_blob_oid(pointer)
            info["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": len(pointer)}
        else:
            info["oid"] = _git_blob_oid(self._read_blob(entry["sha256"]))
        if expand:
            info["lastCommit"] = self._last_commit(repo, [entry])
        return info

    def _folder_info(self, repo: dict[str, Any], path: str, files: dict[str, dict], expand: bool) -> dict[str, Any]:
        inside = {p: e for p, e in files.items() if p.startswith(path + "/")}
        oid = hashlib.sha1(json.dumps(sorted((p, e["sha256"]) for p, e in inside.items())).encode()).hexdigest()
        info: dict[str, Any] = {"type": "directory", "path": path, "oid": oid, "size": 0}
        if expand:
            info["lastCommit"] = self._last_commit(repo, list(inside.values()))
        return info

    @staticmethod
    def _last_commit(repo: dict[str, Any], entries: list[dict]) -> dict[str, str]:
        order = list(repo["commits"])
        commit = repo["commits"][max((e["last_commit"] for e in entries), key=order.index)]
        return {"id": commit["id"], "title": commit["title"], "date": commit["date"]}

    def _repo_info(self, repo: dict[str, Any], commit: dict[str, Any], blobs: bool) -> dict[str, Any]:
        files = commit["files"]
        siblings = []
        for path, entry in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                info = self._file_info(repo, path, entry, expand=False)
                sibling.update(size=info["size"], blobId=info["oid"])
                if "lfs" in info:
                    lfs = info["lfs"]
                    sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        readme = files.get("README.md")
        try:
            card_data = _front_matter(self._read_blob(readme["sha256"]).decode("utf-8", "replace")) if readme else None
        except yaml.YAMLError:
            card_data = None
        namespace = repo["id"].split("/")[0]
        return {
            "_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24],
            "id": repo["id"],
            "author": namespace,
            "sha": commit["id"],
            "createdAt": repo["created_at"],
            "lastModified": commit["date"],
            "private": repo["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": card_data if isinstance(card_data, dict) else None,
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }

    def _apply_commit(self, repo: dict[str, Any], lines: list[dict[str, Any]]) -> str:
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo["head"]:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = {path: dict(entry) for path, entry in repo["commits"][repo["head"]]["files"].items()}
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "").strip("/")
            if key == "file":
                raw = value["content"]
                content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                files[path] = {"sha256": self._store_blob(content), "size": len(content), "lfs": False}
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                if value.get("algo", "sha256") != "sha256" or not SHA256.fullmatch(oid):
                    raise HubError(400, f"Invalid LFS object {oid!r} for {path}")
                if not self._blob_file(oid).is_file():
                    raise HubError(400, f"LFS object {oid} of {path} was not uploaded")
                files[path] = {"sha256": oid, "size": self._blob_file(oid).stat().st_size, "lfs": True}
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                inside = [p for p in files if p.startswith(path + "/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        return self._add_commit(repo, files, header.get("summary") or "", header.get("description") or "")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LoopbackHub


class _Handler(BaseHTTPRequestHandler):
    """Routes each request to the hub; HTTP/1.0, so every connection closes after its answer."""

    server: _Server
    server_version = "LoopbackHub/1.0"
    query: dict[str, list[str]]
    body: bytes

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``LoopbackHub.requests`` records what was asked."""

    # -- plumbing ----------------------------------------------------------------------------------------------

    @property
    def hub(self) -> LoopbackHub:
        return self.server.hub

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((method, url.path))
        self.query = parse_qs(url.query)
        self.body = self._read_body()
        try:
            status, headers, payload = self._route(method, url.path)
        except HubError as error:
            status, headers, payload = error.status, error.headers, self._json_bytes({"error": error.message})
            headers = {"Content-Type": "application/json", **headers}
        except Exception as error:  # a bug here should reach the test as an answer, not a hang
            status, headers = 500, {"Content-Type": "application/json"}
            payload = self._json_bytes({"error": f"LoopbackHub: {type(error).__name__}: {error}"})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json_bytes(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def _json(self, obj: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, self._json_bytes(obj)

    def _token(self) -> str | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def _require_token(self) -> None:
        if self._token() is None:
            raise HubError(401, "Authorization header with a Bearer token is required for this request")

    def _payload(self) -> dict[str, Any]:
        try:
            payload = json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error
        if not isinstance(payload, dict):
            raise HubError(400, "The JSON body must be an object")
        return payload

    def _url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.hub.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}"

    # -- routes ------------------------------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if (method, path) == ("GET", "/api/whoami-v2"):
            return self._whoami()
        if (method, path) == ("GET", "/api/agent-harnesses"):
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if (method, path) == ("POST", "/api/repos/create"):
            return self._create_repo()
        if (method, path) == ("POST", "/api/validate-yaml"):
            return self._validate_yaml()
        if match := _API_REPO.match(path):
            kind, namespace, name, action, revision, rest = match.groups()
            repo_type, repo_id = REPO_TYPES[kind], f"{unquote(namespace)}/{unquote(name)}"
            revision = unquote(revision) if revision else "main"
            in_repo = unquote(rest or "").strip("/")
            handler = {
                ("GET", None): self._info,
                ("GET", "revision"): self._info,
                ("GET", "tree"): self._tree,
                ("POST", "paths-info"): self._paths_info,
                ("GET", "commits"): self._commits,
                ("POST", "preupload"): self._preupload,
                ("POST", "commit"): self._commit,
            }.get((method, action))
            if handler is not None:
                return handler(repo_type, repo_id, revision, in_repo)
        if method == "POST" and (match := _LFS_BATCH.match(path)):
            kind, namespace, name = match.groups()
            return self._lfs_batch(REPO_TYPES.get(kind or "models", "model"), f"{unquote(namespace)}/{unquote(name)}")
        if method == "PUT" and (match := _LFS_UPLOAD.match(path)):
            return self._lfs_upload(match.group(1))
        if method in ("GET", "HEAD") and (match := _RESOLVE.match(path)):
            kind, namespace, name, revision, file_path = match.groups()
            repo_type, repo_id = REPO_TYPES.get(kind or "models", "model"), f"{unquote(namespace)}/{unquote(name)}"
            return self._resolve(repo_type, repo_id, unquote(revision), unquote(file_path))
        raise HubError(404, f"LoopbackHub does not implement {method} {path}")

    def _whoami(self) -> tuple[int, dict[str, str], bytes]:
        if self._token() is None:
            raise HubError(401, "Invalid username or password.")
        user = {
            "type": "user",
            "id": hashlib.sha1(USER.encode()).hexdigest()[:24],
            "name": USER,
            "fullname": "Loopback Test User",
            "email": f"{USER}@loopback.invalid",
            "emailVerified": True,
            "isPro": False,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
        }
        return self._json(user)

    def _create_repo(self) -> tuple[int, dict[str, str], bytes]:
        self._require_token()
        payload = self._payload()
        repo_type = payload.get("type") or "model"
        name, namespace = payload.get("name") or "", payload.get("organization") or USER
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        if not REPO_NAME.match(name) or "--" in name or ".." in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name {name!r}")
        if not REPO_NAME.match(namespace):
            raise HubError(400, f"Invalid namespace {namespace!r}")
        repo_id = f"{namespace}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = self._url(repo_type, repo_id)
        if self.hub._create_repo(repo_type, repo_id, private) is None:
            return self._json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> tuple[int, dict[str, str], bytes]:
        content = self._payload().get("content") or ""
        try:
            metadata = _front_matter(content)
        except yaml.YAMLError as error:
            return self._json({"errors": [{"message": f"Invalid YAML: {error}"}], "warnings": []}, 400)
        if metadata is not None and not isinstance(metadata, dict):
            return self._json({"errors": [{"message": "The metadata must be a YAML dictionary"}], "warnings": []}, 400)
        return self._json({"errors": [], "warnings": []})

    def _info(self, repo_type: str, repo_id: str, revision: str, _: str) -> tuple[int, dict[str, str], bytes]:
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, self._token() is not None)
            commit = self.hub._commit_at(repo, revision)
            return self._json(self.hub._repo_info(repo, commit, blobs=_flag(self.query.get("blobs"))))

    def _tree(self, repo_type: str, repo_id: str, revision: str, in_repo: str) -> tuple[int, dict[str, str], bytes]:
        recursive, expand = _flag(self.query.get("recursive")), _flag(self.query.get("expand"))
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, self._token() is not None)
            files = self.hub._commit_at(repo, revision)["files"]
            prefix = f"{in_repo}/" if in_repo else ""
            below = sorted(p[len(prefix) :] for p in files if p.startswith(prefix))
            if in_repo and not below:
                raise HubError(404, f"{in_repo} is not a folder at {revision}", "EntryNotFound")
            folders, entries = set(), []
            for relative in below:
                parts = relative.split("/")
                depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
                folders.update("/".join(parts[: i + 1]) for i in range(depth))
                if recursive or len(parts) == 1:
                    entries.append(self.hub._file_info(repo, prefix + relative, files[prefix + relative], expand))
            folder_infos = [self.hub._folder_info(repo, prefix + f, files, expand) for f in sorted(folders)]
            return self._json(folder_infos + entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, _: str) -> tuple[int, dict[str, str], bytes]:
        form = parse_qs(self.body.decode())
        expand = _flag(form.get("expand"))
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, self._token() is not None)
            files = self.hub._commit_at(repo, revision)["files"]
            infos = []
            for path in (p.strip("/") for p in form.get("paths", [])):
                if path in files:
                    infos.append(self.hub._file_info(repo, path, files[path], expand))
                elif any(p.startswith(path + "/") for p in files):
                    infos.append(self.hub._folder_info(repo, path, files, expand))
            return self._json(infos)

    def _commits(self, repo_type: str, repo_id: str, revision: str, _: str) -> tuple[int, dict[str, str], bytes]:
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, self._token() is not None)
            commit, history = self.hub._commit_at(repo, revision), []
            while commit is not None:
                history.append(
                    {
                        "id": commit["id"],
                        "title": commit["title"],
                        "message": commit["message"],
                        "authors": [{"user": USER}],
                        "date": commit["date"],
                    }
                )
                commit = repo["commits"].get(commit["parent"]) if commit["parent"] else None
            return self._json(history)

    def _preupload(self, repo_type: str, repo_id: str, revision: str, _: str) -> tuple[int, dict[str, str], bytes]:
        self._require_token()
        payload = self._payload()
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, authorized=True)
            commit = self.hub._commit_at(repo, revision)
            answers = []
            for file in payload.get("files", []):
                path = file["path"]
                mode = _upload_mode(path, int(file["size"]), base64.b64decode(file.get("sample", "")))
                existing, oid = commit["files"].get(path), None
                if existing is not None and mode == "lfs":
                    oid = existing["sha256"]
                elif existing is not None:
                    oid = _git_blob_oid(self.hub._read_blob(existing["sha256"]))
                answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            return self._json({"files": answers, "commitOid": commit["id"]})

    def _commit(self, repo_type: str, repo_id: str, revision: str, _: str) -> tuple[int, dict[str, str], bytes]:
        self._require_token()
        if self.hub.fail_commits:
            raise HubError(500, "Internal Error (LoopbackHub.fail_commits is set)")
        if revision != "main" or _flag(self.query.get("create_pr")):
            raise HubError(400, "LoopbackHub only commits to its 'main' branch (no other branches, no pull requests)")
        try:
            lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid ndjson body: {error}") from error
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, authorized=True)
            commit_id = self.hub._apply_commit(repo, lines)
        commit_url = f"{self._url(repo_type, repo_id)}/commit/{commit_id}"
        return self._json({"success": True, "commitOid": commit_id, "commitUrl": commit_url, "pullRequestUrl": None})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> tuple[int, dict[str, str], bytes]:
        self._require_token()
        payload = self._payload()
        if payload.get("operation") != "upload":
            raise HubError(400, "LoopbackHub's LFS batch endpoint only handles uploads")
        with self.hub._lock:
            self.hub._repo(repo_type, repo_id, authorized=True)
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and SHA256.fullmatch(oid) and isinstance(size, int)):
                objects.append({"oid": str(oid), "size": 0, "error": {"code": 422, "message": "Invalid oid or size"}})
                continue
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            blob = self.hub._blob_file(oid)
            if not (blob.is_file() and blob.stat().st_size == size):
                answer["actions"] = {"upload": {"href": f"{self.hub.endpoint}/loopback-lfs/{oid}", "header": {}}}
            objects.append(answer)
        body = self._json_bytes({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, body

    def _lfs_upload(self, oid: str) -> tuple[int, dict[str, str], bytes]:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not hash to {oid}")
        self.hub._store_blob(self.body)
        return 200, {"ETag": f'"{oid}"'}, b""

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[int, dict[str, str], bytes]:
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id, self._token() is not None)
            commit = self.hub._commit_at(repo, revision)
            entry = commit["files"].get(path)
            repo_commit = {"X-Repo-Commit": commit["id"]}
            if entry is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", repo_commit)
            content = self.hub._read_blob(entry["sha256"])
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **repo_commit}
        if entry["lfs"]:
            headers.update({"ETag": f'"{entry["sha256"]}"', "X-Linked-Etag": f'"{entry["sha256"]}"'})
            headers["X-Linked-Size"] = str(entry["size"])
        else:
            headers["ETag"] = f'"{_git_blob_oid(content)}"'
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if byte_range is None:
            return 200, headers, content
        first, last = byte_range.groups()
        total = len(content)
        start = total - int(last) if not first else int(first)
        end = total - 1 if not first or not last else min(int(last), total - 1)
        if start >= total or start > end:
            message = f"Range {self.headers['Range']} not satisfiable for {total} bytes"
            raise HubError(416, message, headers={**repo_commit, "Content-Range": f"bytes */{total}"})
        headers["Content-Range"] = f"bytes {max(start, 0)}-{end}/{total}"
        return 206, headers, content[max(start, 0) : end + 1]
