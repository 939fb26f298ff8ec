"""Every cache key and cache tag, in one place (docs/API.md lists them for ``/api/admin/cache/invalidate``).

Keys are ``<kind>:<platform>:<id>[:<page>:<limit>]``. Tags group the entries that show one thing,
so that what one route learns (a tournament finished, cancelled, gone) drops every entry that
shows it, lists included: every entry of a tournament carries :func:`tournament_tag`, every
tournament list :data:`LISTS_TAG`.
"""

from __future__ import annotations

#: Tag of every cached tournament list (``GET /api/tournaments``).
LISTS_TAG = "lists:tournaments"


def tournament_tag(platform: str, tid: str) -> str:
    """Tag of every entry that shows tournament ``tid`` (detail, standings and games pages)."""
    return f"t:{platform}:{tid}"


def tournament(platform: str, tid: str) -> str:
    """``GET /api/tournaments/{id}``: the detail."""
    return f"tournament:{platform}:{tid}"


def results(platform: str, tid: str, page: int, limit: int) -> str:
    """``GET /api/tournaments/{id}/results``: one standings page."""
    return f"results:{platform}:{tid}:{page}:{limit}"


def games(platform: str, tid: str, page: int, limit: int) -> str:
    """``GET /api/tournaments/{id}/games``: one games page."""
    return f"games:{platform}:{tid}:{page}:{limit}"


def tournament_list(status: str | None, platform: str | None, page: int, limit: int) -> str:
    """``GET /api/tournaments``: one list page (``*`` for an absent filter)."""
    return f"tournaments:{status or '*'}:{platform or '*'}:{page}:{limit}"


def failure(key: str) -> str:
    """The remembered failure of the fetch behind ``key`` (a 404 is a negative entry, any other
    failure a short, growing back-off): ``fail:<key>``."""
    return f"fail:{key}"


def chesscom_month(username: str, year: int, month: int) -> str:
    """One monthly archive of a Chess.com player (``GET /pub/player/{username}/games/{YYYY}/{MM}``):
    ``archive:chesscom:<username lower-cased>:<YYYY-MM>``; its remembered failure is
    :func:`failure` of it."""
    return f"archive:chesscom:{username.lower()}:{year:04d}-{month:02d}"


def leaderboard(perf_type: str, nb: int) -> str:
    """A Lichess leaderboard (filled by the ``rankings-updater`` job)."""
    return f"players:lichess:top:{perf_type}:{nb}"


def fide_top(limit: int) -> str:
    """The FIDE top list (filled by the ``fide-ratings`` job)."""
    return f"players:fide:top:{limit}"


def lichess_player(username: str) -> str:
    """``GET /api/players/lichess/{username}``: a profile (one entry whatever the case asked)."""
    return f"player:lichess:{username.lower()}"


def lichess_history(username: str) -> str:
    """``GET /api/players/lichess/{username}/history``: a rating history."""
    return f"history:lichess:{username.lower()}"


def fide_player(fide_id: int) -> str:
    """``GET /api/players/fide/{fideId}``: a FIDE profile."""
    return f"player:fide:{fide_id}"


def fide_history(fide_id: int) -> str:
    """``GET /api/players/fide/{fideId}/history``: a FIDE rating history."""
    return f"history:fide:{fide_id}"


def fide_search(query: str) -> str:
    """``GET /api/players/fide/search?q=``: one search (the query lower-cased, spaces collapsed)."""
    return f"players:fide:search:{' '.join(query.lower().split())}"


def chesscom_player(username: str) -> str:
    """``GET /api/players/chesscom/{username}``: profile + stats (one entry whatever the case asked)."""
    return f"player:chesscom:{username.lower()}"


def chesscom_top(board: str) -> str:
    """``GET /api/players/chesscom/top/{timeClass}``: one board of Chess.com's ``/leaderboards``."""
    return f"players:chesscom:top:{board}"


def chesscom_titled(title: str) -> str:
    """``GET /api/players/chesscom/titled/{title}``: the usernames holding a title."""
    return f"players:chesscom:titled:{title.upper()}"


def stored_player(player_id: int) -> str:
    """``GET /api/players/{id}``: a stored player with every linked account."""
    return f"player:{player_id}"


def player_tag(player_id: int) -> str:
    """Tag of every entry that shows stored player ``player_id`` (dropped when a link changes)."""
    return f"p:{player_id}"
