"""Saved conversations: SQLite in a temporary directory, and PostgreSQL when its server is here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from voxserve.chat import history
from voxserve.chat.characters import USER, Character, ChatTurn
from voxserve.chat.history import ConversationStore, new_id
from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError

AVA = Character("Ava", "warm_female", "You are Ava.")
MAX = Character("Max", "deep_male", "You are Max.", "a grumpy uncle")
POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback, run as the postgres user (it refuses root)."""
    if POSTGRES_BIN is None or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs a PostgreSQL server (Debian's postgresql package) and root")
    ids = _postgres_ids()
    home = Path(tempfile.mkdtemp(prefix="voxserve-postgres-"))  # pytest's are root-only
    os.chown(home, *ids)
    data, port = home / "data", free_port()

    def as_postgres(*command: str) -> None:
        # No pipes: the server started by pg_ctl would hold them open, and we would wait forever.
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "voxserve")
    options = f"-p {port} -h 127.0.0.1 -k {home}"
    pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log")]
    as_postgres(*pg_ctl, "-o", options, "-w", "start")
    try:
        yield f"postgresql+psycopg://voxserve@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(*pg_ctl, "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("needs the postgres user")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> Iterator[ConversationStore]:
    url = (
        f"sqlite:///{tmp_path / 'chat.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = ConversationStore(url)
    yield store
    if request.param == "postgresql":  # the cluster outlives the test: leave it empty
        for summary in store.recent(500):
            store.delete(summary.id)
    store.close()


def add(store: ConversationStore, conversation_id: str, *turns: tuple[str, str]) -> None:
    for speaker, text in turns:
        store.add_turn(conversation_id, ChatTurn(speaker, text), characters=[AVA, MAX],
                       policy="round_robin")  # fmt: skip


def test_a_conversation_is_saved_from_its_first_turn(store):
    conversation_id = new_id()
    with pytest.raises(NotFoundError, match="no conversation"):
        store.get(conversation_id)
    add(store, conversation_id, (USER, "When does the library open?"), ("Ava", "At nine."))
    add(store, conversation_id, (USER, "Max, and you?"), ("Max", "I never go."))

    saved = store.get(conversation_id)
    assert saved.title == "When does the library open?"
    assert saved.characters == [AVA, MAX] and saved.policy == "round_robin"
    assert saved.turns == [
        ChatTurn(USER, "When does the library open?"), ChatTurn("Ava", "At nine."),
        ChatTurn(USER, "Max, and you?"), ChatTurn("Max", "I never go."),
    ]  # fmt: skip
    assert saved.to_dict()["turns"][3] == {"speaker": "Max", "text": "I never go."}


def test_recent_lists_the_latest_first_with_turn_counts(store):
    first, second = new_id(), new_id()
    add(store, first, (USER, "one " * 40))
    add(store, second, ("Ava", "Hello!"), (USER, "Hi"))
    add(store, first, ("Ava", "That was long."))

    listed = store.recent()
    assert [(s.id, s.turns) for s in listed] == [(first, 2), (second, 2)]
    assert listed[0].title.endswith("…") and len(listed[0].title) <= 60
    assert listed[1].title == "Hi"  # the first *user* turn names it
    assert [s.id for s in store.recent(limit=1, offset=1)] == [second]


def test_characters_change_and_delete(store):
    conversation_id = new_id()
    store.set_characters(conversation_id, [MAX], "first")  # not saved yet: nothing happens
    add(store, conversation_id, (USER, "Hello"))
    store.set_characters(conversation_id, [MAX], "first")
    assert (store.get(conversation_id).characters, store.get(conversation_id).policy) == (
        [MAX], "first"
    )  # fmt: skip
    store.delete(conversation_id)
    with pytest.raises(NotFoundError):
        store.get(conversation_id)
    with pytest.raises(NotFoundError):
        store.delete(conversation_id)
    assert store.recent() == []


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "A" * 32, new_id() + "0"])
def test_a_malformed_id_is_refused(sqlite_url, bad):
    store = ConversationStore(sqlite_url)
    with pytest.raises(InvalidRequestError, match="not a conversation id"):
        store.get(bad)
    with pytest.raises(InvalidRequestError, match="not a conversation id"):
        add(store, bad, (USER, "hello"))


def test_conversations_survive_a_restart_and_concurrent_writers(sqlite_url):
    store = ConversationStore(sqlite_url)
    ids = [new_id() for _ in range(4)]

    def talk(conversation_id: str) -> None:
        for n in range(10):
            add(store, conversation_id, (USER, f"question {n}"), ("Ava", f"answer {n}"))

    threads = [threading.Thread(target=talk, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()

    reopened = ConversationStore(sqlite_url)
    assert sorted(s.id for s in reopened.recent()) == sorted(ids)
    for conversation_id in ids:
        turns = reopened.get(conversation_id).turns
        assert [t.text for t in turns[:4]] == ["question 0", "answer 0", "question 1", "answer 1"]
        assert len(turns) == 20


def test_an_unusable_database_url_is_a_clear_error():
    with pytest.raises(InvalidRequestError, match="not a usable SQLAlchemy URL"):
        ConversationStore("nosuchdb://somewhere")


def test_a_deleted_conversation_can_be_brought_back(store):
    conversation_id = new_id()
    add(store, conversation_id, (USER, "When does the library open?"), ("Ava", "At nine."))
    before = store.get(conversation_id)
    store.delete(conversation_id)
    with pytest.raises(NotFoundError):
        store.get(conversation_id)

    restored = store.undelete(conversation_id)
    assert restored == before == store.get(conversation_id)
    assert [s.id for s in store.recent()] == [conversation_id]
    with pytest.raises(NotFoundError, match="no deleted conversation"):
        store.undelete(conversation_id)  # the copy went back: it is no longer a deleted one
    store.delete(conversation_id)
    add(store, conversation_id, (USER, "A new one, under the old id"))
    with pytest.raises(ConflictError, match="delete it first"):
        store.undelete(conversation_id)


def test_the_latest_deleted_conversations_are_kept(sqlite_url, monkeypatch):
    monkeypatch.setattr(history, "KEPT_DELETED", 2)
    store = ConversationStore(sqlite_url)
    ids = [new_id() for _ in range(3)]
    for conversation_id in ids:
        add(store, conversation_id, (USER, "hello"))
        store.delete(conversation_id)
    with pytest.raises(NotFoundError):
        store.undelete(ids[0])
    assert [store.undelete(i).id for i in ids[1:]] == ids[1:]


def test_a_failed_turn_is_taken_back(store):
    conversation_id = new_id()
    add(store, conversation_id, (USER, "Hello"), ("Ava", "Hi!"), (USER, "This one failed"))
    store.drop_last_turn(conversation_id, ChatTurn(USER, "Not the last one"))  # nothing
    store.drop_last_turn(conversation_id, ChatTurn(USER, "This one failed"))
    assert [t.text for t in store.get(conversation_id).turns] == ["Hello", "Hi!"]

    alone = new_id()  # a failed first turn leaves nothing, as if the chat was never opened
    add(store, alone, (USER, "Only this"))
    store.drop_last_turn(alone, ChatTurn(USER, "Only this"))
    assert [s.id for s in store.recent()] == [conversation_id]


def test_a_conversation_saved_with_bad_characters_is_an_error_not_a_crash(sqlite_url):
    """Before characters were checked, a client could save a name of 5; resumed, such a chat
    dropped the socket at every message."""
    store = ConversationStore(sqlite_url)
    conversation_id = new_id()
    add(store, conversation_id, (USER, "hello"))
    with store.engine.begin() as db:
        db.execute(
            history._conversations.update().values(
                characters=[{"name": 5, "voice": "joe", "persona": ""}]
            )
        )
    with pytest.raises(InvalidRequestError, match="characters that are not valid") as caught:
        store.get(conversation_id)
    assert caught.value.code == "invalid_conversation"
    store.delete(conversation_id)  # it can still be deleted, and it is kept as it was
    with pytest.raises(InvalidRequestError, match="characters that are not valid"):
        store.undelete(conversation_id)


def test_a_bad_database_url_is_named_without_its_password() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        ConversationStore("postgresql+nosuch://voxserve:hunter2@db/voxserve")
    assert refused.value.param == "chat.database_url"
    assert "hunter2" not in refused.value.message and "***@db" in refused.value.message
