"""Voice-chat conversations kept in a database: SQLite in the data directory by default, or any
SQLAlchemy URL (``postgresql+psycopg://...``) for a shared server.

A conversation is its characters, its speaker policy and its turns in order. Each write is one
transaction, so a crash loses at most the turn being written, never a half-written one. The calls
block: the chat runs them in a worker thread.

A deleted conversation is kept whole in ``deleted_conversations`` (the last `KEPT_DELETED`), in
the transaction that deletes it: `ConversationStore.undelete` brings it back.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from voxserve.chat.characters import USER, Character, ChatTurn
from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError
from voxserve.net import redact_url

TITLE_CHARS = 60
"""A conversation's title is the start of its first user turn."""
KEPT_DELETED = 100
"""Deleted conversations kept for `ConversationStore.undelete`, the latest first."""
_ID = re.compile(r"[0-9a-f]{32}")

_metadata = sa.MetaData()
_conversations = sa.Table(
    "conversations",
    _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("title", sa.String(TITLE_CHARS), nullable=False, default=""),
    sa.Column("characters", sa.JSON, nullable=False),
    sa.Column("policy", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False, index=True),
)
_turns = sa.Table(
    "turns",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "conversation_id",
        sa.String(32),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("speaker", sa.String(80), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
_deleted = sa.Table(
    "deleted_conversations",
    _metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(32), nullable=False, index=True),
    sa.Column("deleted_at", sa.Float, nullable=False),
    sa.Column("conversation", sa.JSON, nullable=False),  # Conversation.to_dict(): all of it
)


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    created_at: float
    updated_at: float
    turns: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "created_at": self.created_at,
                "updated_at": self.updated_at, "turns": self.turns}  # fmt: skip


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    characters: list[Character]
    policy: str
    created_at: float
    updated_at: float
    turns: list[ChatTurn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "policy": self.policy,
            "characters": _plain(self.characters),
            "created_at": self.created_at, "updated_at": self.updated_at,
            "turns": [{"speaker": t.speaker, "text": t.text} for t in self.turns],
        }  # fmt: skip


class ConversationStore:
    def __init__(self, url: str):
        try:
            self.engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as error:
            raise InvalidRequestError(
                redact_url(f"chat.database_url {url!r} is not a usable SQLAlchemy URL: {error}"),
                param="chat.database_url",
            ) from error
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        _metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add_turn(
        self,
        conversation_id: str,
        turn: ChatTurn,
        *,
        characters: Sequence[Character],
        policy: str,
    ) -> None:
        """Append a turn, creating the conversation with ``characters`` and ``policy`` at its first
        turn (so that opening a chat and leaving saves nothing); the first user turn names it."""
        check_id(conversation_id)
        now = time.time()
        with self.engine.begin() as db:
            row = db.execute(
                sa.select(_conversations.c.title).where(_conversations.c.id == conversation_id)
            ).first()
            if row is None:
                db.execute(
                    _conversations.insert().values(
                        id=conversation_id, title="", characters=_plain(characters),
                        policy=policy, created_at=now, updated_at=now,
                    )
                )  # fmt: skip
            title = row.title if row else ""
            values: dict[str, Any] = {"updated_at": now}
            if not title and turn.speaker == USER:
                values["title"] = _title(turn.text)
            db.execute(
                _turns.insert().values(
                    conversation_id=conversation_id, speaker=turn.speaker, text=turn.text,
                    created_at=now,
                )
            )  # fmt: skip
            db.execute(
                _conversations.update()
                .where(_conversations.c.id == conversation_id)
                .values(**values)
            )

    def set_characters(
        self, conversation_id: str, characters: Sequence[Character], policy: str
    ) -> None:
        """New characters for a saved conversation (none saved yet under that id: nothing to do)."""
        with self.engine.begin() as db:
            db.execute(
                _conversations.update()
                .where(_conversations.c.id == conversation_id)
                .values(characters=_plain(characters), policy=policy)
            )

    def get(self, conversation_id: str) -> Conversation:
        with self.engine.connect() as db:
            return self._conversation(db, conversation_id)

    def recent(self, limit: int = 50, offset: int = 0) -> list[ConversationSummary]:
        """The most recently active conversations first."""
        counts = (
            sa.select(_turns.c.conversation_id, sa.func.count().label("turns"))
            .group_by(_turns.c.conversation_id)
            .subquery()
        )
        query = (
            sa.select(_conversations, sa.func.coalesce(counts.c.turns, 0).label("turns"))
            .outerjoin(counts, counts.c.conversation_id == _conversations.c.id)
            .order_by(_conversations.c.updated_at.desc(), _conversations.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as db:
            rows = db.execute(query).all()
        return [
            ConversationSummary(row.id, row.title, row.created_at, row.updated_at, row.turns)
            for row in rows
        ]

    def drop_last_turn(self, conversation_id: str, turn: ChatTurn) -> None:
        """Take back ``turn``, if it is the conversation's latest (a turn that failed); a
        conversation left with no turns goes too, as if never opened."""
        with self.engine.begin() as db:
            last = db.execute(
                sa.select(_turns.c.id, _turns.c.speaker, _turns.c.text)
                .where(_turns.c.conversation_id == conversation_id)
                .order_by(_turns.c.id.desc())
                .limit(1)
            ).first()
            if last is None or (last.speaker, last.text) != (turn.speaker, turn.text):
                return
            db.execute(_turns.delete().where(_turns.c.id == last.id))
            if not db.execute(
                sa.select(_turns.c.id).where(_turns.c.conversation_id == conversation_id).limit(1)
            ).first():
                db.execute(_conversations.delete().where(_conversations.c.id == conversation_id))

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation, keeping a copy for `undelete` (the last `KEPT_DELETED`)."""
        with self.engine.begin() as db:
            row = self._row(db, conversation_id)  # as saved, valid or not: it is kept whole
            copy = {
                "title": row.title, "characters": row.characters, "policy": row.policy,
                "created_at": row.created_at, "updated_at": row.updated_at,
                "turns": [{"speaker": speaker, "text": text}
                          for speaker, text in _turns_of(db, conversation_id)],
            }  # fmt: skip
            db.execute(
                _deleted.insert().values(
                    conversation_id=conversation_id, deleted_at=time.time(), conversation=copy
                )
            )
            db.execute(_turns.delete().where(_turns.c.conversation_id == conversation_id))
            db.execute(_conversations.delete().where(_conversations.c.id == conversation_id))
            oldest_kept = (
                sa.select(_deleted.c.number)
                .order_by(_deleted.c.number.desc())
                .offset(KEPT_DELETED - 1)
                .limit(1)
                .scalar_subquery()
            )
            db.execute(_deleted.delete().where(_deleted.c.number < oldest_kept))

    def undelete(self, conversation_id: str) -> Conversation:
        """Bring back the latest deleted copy of a conversation, as it was."""
        check_id(conversation_id)
        with self.engine.begin() as db:
            copy = db.execute(
                sa.select(_deleted.c.number, _deleted.c.conversation)
                .where(_deleted.c.conversation_id == conversation_id)
                .order_by(_deleted.c.number.desc())
                .limit(1)
            ).first()
            if copy is None:
                raise NotFoundError(
                    f"no deleted conversation {conversation_id!r}", param="conversation_id",
                    code="conversation_not_found",
                )  # fmt: skip
            if db.execute(
                sa.select(_conversations.c.id).where(_conversations.c.id == conversation_id)
            ).first():
                raise ConflictError(
                    f"conversation {conversation_id!r} exists: delete it first",
                    param="conversation_id", code="conversation_exists",
                )  # fmt: skip
            saved = copy.conversation
            db.execute(
                _conversations.insert().values(
                    id=conversation_id, title=saved["title"], characters=saved["characters"],
                    policy=saved["policy"], created_at=saved["created_at"],
                    updated_at=saved["updated_at"],
                )
            )  # fmt: skip
            if saved["turns"]:
                db.execute(
                    _turns.insert(),
                    [{"conversation_id": conversation_id, "speaker": turn["speaker"],
                      "text": turn["text"], "created_at": saved["updated_at"]}
                     for turn in saved["turns"]],
                )  # fmt: skip
            db.execute(_deleted.delete().where(_deleted.c.number == copy.number))
            return self._conversation(db, conversation_id)

    def _conversation(self, db: sa.Connection, conversation_id: str) -> Conversation:
        row = self._row(db, conversation_id)
        return Conversation(
            id=row.id,
            title=row.title,
            characters=_characters(row.characters, conversation_id),
            policy=row.policy,
            created_at=row.created_at,
            updated_at=row.updated_at,
            turns=[ChatTurn(speaker, text) for speaker, text in _turns_of(db, conversation_id)],
        )

    @staticmethod
    def _row(db: sa.Connection, conversation_id: str) -> Any:
        check_id(conversation_id)
        row = db.execute(
            sa.select(_conversations).where(_conversations.c.id == conversation_id)
        ).first()
        if row is None:
            raise NotFoundError(
                f"no conversation {conversation_id!r}", param="conversation_id",
                code="conversation_not_found",
            )  # fmt: skip
        return row


def history_disabled() -> InvalidRequestError:
    return InvalidRequestError(
        "conversations are not saved on this server (chat.keep_history is off)",
        code="history_disabled",
    )


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(conversation_id: str) -> None:
    if not (isinstance(conversation_id, str) and _ID.fullmatch(conversation_id)):
        raise InvalidRequestError(
            f"{conversation_id!r} is not a conversation id (32 hexadecimal digits)",
            param="conversation_id", code="invalid_conversation_id",
        )  # fmt: skip


def _plain(characters: Sequence[Character]) -> list[dict[str, str]]:
    return [dict(character.__dict__) for character in characters]


def _turns_of(db: sa.Connection, conversation_id: str) -> list[tuple[str, str]]:
    """A conversation's turns in order, as (speaker, text)."""
    rows = db.execute(
        sa.select(_turns.c.speaker, _turns.c.text)
        .where(_turns.c.conversation_id == conversation_id)
        .order_by(_turns.c.id)
    ).all()
    return [(speaker, text) for speaker, text in rows]


def _characters(saved: list[dict], conversation_id: str) -> list[Character]:
    """The characters a conversation was saved with, checked: a server before the checks saved
    anything a client sent (a name of 5), and resumed, it failed every turn."""
    try:
        return [Character(**c) for c in saved]
    except (TypeError, ValidationError) as error:
        raise InvalidRequestError(
            f"conversation {conversation_id!r} was saved with characters that are not valid "
            f"({error.__class__.__name__}); delete it and start again",
            param="conversation_id",
            code="invalid_conversation",
        ) from None


def _title(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: readers never block the writer; foreign keys are off by default in SQLite.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
