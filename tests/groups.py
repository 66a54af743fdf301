"""Which tests share an xdist worker, and in what order the groups start.

``--dist loadgroup`` meant to keep each module on one worker (so a module's servers
start once), but pytest 9 turned node ids into structured values that pytest-xdist 3.8
can no longer suffix with the group (pytest-xdist issue #1386): every test became a
group of its own, each module's servers started on every worker, and the language-model
demo server three times. So the controller groups the node ids itself
(``GroupScheduling``, made by ``tests/conftest.py``), from the node id alone: it never
collects, so it cannot see a test's fixtures.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

__all__ = ["LLM_DEMO", "GroupScheduling", "group_of", "rank"]

#: The group of the tests that use ``demo_server`` (the demo with its language models,
#: started once per worker that runs one of them): the node ids, or their prefixes,
#: that belong to it. ``tests/conftest.py`` checks on every worker that each test
#: using ``demo_server`` in ``tests/integration`` is listed here.
LLM_DEMO = "llm-demo"
_LLM_DEMO_TESTS = (
    "tests/integration/test_openai.py::",  # tests of servers of their own: test_openai_servers
    "tests/integration/test_jobs_lifecycle.py::test_sources_a_job_cannot_load_are_refused_at_submit",
)

#: Where each part of the suite runs in the order of a run, first to last: the groups
#: are handed out in this order (``--no-loadscope-reorder``), so the longest (a server
#: with language models, a browser, servers in subprocesses, the LLM and type-check
#: units) start first and the short ones fill in behind them. The Ray cluster's module
#: and the job runners' take minutes, much of it waiting on a cluster or on servers of
#: their own: handed out after the integration modules, they ran alone at the end of a
#: run while a core idled.
_ORDER = (
    LLM_DEMO,
    "tests/unit/serving/test_ray_cluster.py",
    "tests/browser/",
    "tests/unit/jobs/test_ray_jobs.py",
    "tests/unit/jobs/test_runners.py",
    "tests/unit/serving/test_generation.py",
    "tests/integration/",
    "tests/unit/serving/",
    "tests/unit/runtimes/",
    "tests/unit/test_quality.py",
    "tests/inprocess/",
    "tests/",
)


def group_of(nodeid: str) -> str:
    """The group of a test: ``LLM_DEMO`` for those listed above, else its module."""
    if nodeid.startswith(_LLM_DEMO_TESTS):
        return LLM_DEMO
    return nodeid.split("::", 1)[0]


def rank(nodeid: str) -> int:
    """The place of a test's group in ``_ORDER``."""
    group = group_of(nodeid)
    ranks = (i for i, prefix in enumerate(_ORDER) if group.startswith(prefix))
    return next(ranks, len(_ORDER))


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with ``group_of`` as the scope: each group runs whole
    on one worker, the groups handed out in the order the workers collected them."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)
