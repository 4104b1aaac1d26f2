"""JobQueue: enqueue/claim/mark/requeue semantics, dedupe by job key, restart recovery."""

from __future__ import annotations

import threading

from dicom_node.store.index import Index
from dicom_node.store.jobs import JobQueue, make_job_key


def _q(tmp_path):
    return JobQueue(Index(tmp_path / "index.sqlite3"))


def test_enqueue_claim_done(tmp_path):
    q = _q(tmp_path)
    jid = q.enqueue("1.2.3", "ms-brain", "ms-lesions", {"flair": "1.2.3.1"},
                    [{"peer": "orthanc"}], priority=0, calling_ae="ORTHANC")
    j = q.get(jid)
    assert j.state == "queued" and j.inputs == {"flair": "1.2.3.1"}
    assert j.destinations == [{"peer": "orthanc"}] and j.calling_ae == "ORTHANC"
    c = q.claim_next()
    assert c.id == jid and c.state == "running" and c.attempts == 1
    assert q.claim_next() is None
    q.mark_done(jid)
    assert q.get(jid).state == "done"
    assert [x.id for x in q.list(state="done")] == [jid]


def test_priority_then_age(tmp_path):
    q = _q(tmp_path)
    low = q.enqueue("1.1", "r", "p", {"flair": "1.1.1"}, [], priority=0)
    high = q.enqueue("1.2", "r", "p", {"flair": "1.2.1"}, [], priority=5)
    low2 = q.enqueue("1.3", "r", "p", {"flair": "1.3.1"}, [], priority=0)
    assert [q.claim_next().id for _ in range(3)] == [high, low, low2]


def test_failed_requeue_and_restart_recovery(tmp_path):
    q = _q(tmp_path)
    a = q.enqueue("1.1", "r", "p", {"flair": "1.1.1"}, [])
    b = q.enqueue("1.2", "r", "p", {"flair": "1.2.1"}, [])
    q.claim_next()
    q.mark_failed(a, "volume: slices not parallel")
    assert q.get(a).state == "failed" and q.get(a).reason == "volume: slices not parallel"
    q.requeue(a)
    assert q.get(a).state == "queued"
    q.claim_next()
    q.claim_next()  # both running now
    q2 = JobQueue(tmp_path / "index.sqlite3")  # "restart"
    assert q2.requeue_running() == 2
    assert {j.state for j in q2.list()} == {"queued"}
    assert q2.get(b).attempts == 1


def test_same_input_is_not_queued_twice_changed_input_is_a_new_version(tmp_path):
    q = _q(tmp_path)
    k1 = make_job_key("1.1", "r", {"flair": "1.1.1"}, {"1.1.1": ["1.1.1.1", "1.1.1.2"]})
    k1b = make_job_key("1.1", "r", {"flair": "1.1.1"}, {"1.1.1": ["1.1.1.2", "1.1.1.1"]})
    k2 = make_job_key("1.1", "r", {"flair": "1.1.1"}, {"1.1.1": ["1.1.1.1", "1.1.1.2", "1.1.1.3"]})
    assert k1 == k1b != k2
    j1 = q.enqueue("1.1", "r", "p", {"flair": "1.1.1"}, [], job_key=k1)
    assert q.enqueue("1.1", "r", "p", {"flair": "1.1.1"}, [], job_key=k1b) == j1
    j2 = q.enqueue("1.1", "r", "p", {"flair": "1.1.1"}, [], job_key=k2)
    assert j2 != j1 and q.get(j2).version == 2 and q.get(j1).version == 1


def test_claim_is_atomic_across_threads(tmp_path):
    q = _q(tmp_path)
    ids = {q.enqueue(f"1.{i}", "r", "p", {"flair": f"1.{i}.1"}, []) for i in range(20)}
    got: list[str] = []
    lock = threading.Lock()

    def worker():
        wq = JobQueue(tmp_path / "index.sqlite3")
        while (j := wq.claim_next()) is not None:
            with lock:
                got.append(j.id)

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(got) == sorted(ids)  # every job claimed exactly once
