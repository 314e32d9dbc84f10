"""Voice-chat conversations kept in a database: SQLite in the data directory by default, or any
SQLAlchemy URL (``postgresql+psycopg://...``) for a shared server.

A conversation is its characters, its speaker policy and its turns in order. Each write is one
transaction, so a crash loses at most the turn being written, never a half-written one. The calls
block: the chat runs them in a worker thread.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from voxserve.chat.characters import USER, Character, ChatTurn
from voxserve.errors import InvalidRequestError, NotFoundError

TITLE_CHARS = 60
"""A conversation's title is the start of its first user turn."""
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
                f"chat.database_url {url!r} is not a usable SQLAlchemy URL: {error}",
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
            row = self._row(db, conversation_id)
            turns = db.execute(
                sa.select(_turns.c.speaker, _turns.c.text)
                .where(_turns.c.conversation_id == conversation_id)
                .order_by(_turns.c.id)
            ).all()
        return Conversation(
            id=row.id,
            title=row.title,
            characters=[Character(**c) for c in row.characters],
            policy=row.policy,
            created_at=row.created_at,
            updated_at=row.updated_at,
            turns=[ChatTurn(speaker, text) for speaker, text in turns],
        )

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

    def delete(self, conversation_id: str) -> None:
        with self.engine.begin() as db:
            self._row(db, conversation_id)
            db.execute(_turns.delete().where(_turns.c.conversation_id == conversation_id))
            db.execute(_conversations.delete().where(_conversations.c.id == conversation_id))

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


def _title(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: readers never block the writer; foreign keys are off by default in SQLite.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
