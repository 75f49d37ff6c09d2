"""Consensus steps: every method, partial failures, min_agents, and capability fan-out (seed: consensus pattern)."""

from __future__ import annotations

from typing import Any

from progressive_cli.engine.executor import AgentRequest, consensus


def opinions(*pairs: tuple[str, Any, float]) -> dict[str, dict[str, Any]]:
    return {agent: {"output": output, "confidence": confidence} for agent, output, confidence in pairs}


def test_highest_confidence_is_the_seeds_default() -> None:
    # seed: the most confident opinion wins; the reported confidence is the average (0.9 + 0.6 + 0.3) / 3 = 0.6
    decision, confidence = consensus("highest_confidence", opinions(("a", "x", 0.6), ("b", "y", 0.9), ("c", "x", 0.3)))
    assert (decision, confidence) == ("y", 0.6)


def test_majority_counts_votes_and_breaks_ties_by_confidence() -> None:
    decision, confidence = consensus("majority", opinions(("a", "x", 0.2), ("b", "y", 0.9), ("c", "x", 0.3)))
    assert (decision, confidence) == ("x", round(2 / 3, 4))  # two of three votes
    # a tie (one vote each): the answer with more confidence behind it
    decision, _ = consensus("majority", opinions(("a", "x", 0.2), ("b", "y", 0.9)))
    assert decision == "y"
    # answers compare by value, not identity: equal objects are one answer
    decision, confidence = consensus("majority", opinions(("a", {"k": 1, "j": 2}, 0.5), ("b", {"j": 2, "k": 1}, 0.5),
                                                          ("c", {"k": 3}, 0.9)))
    assert decision == {"k": 1, "j": 2} and confidence == round(2 / 3, 4)


def test_weighted_sums_confidence_per_answer() -> None:
    # x: 0.2 + 0.3 = 0.5; y: 0.9 -> y wins with 0.9 / 1.4 = 0.6429 of the weight
    decision, confidence = consensus("weighted", opinions(("a", "x", 0.2), ("b", "y", 0.9), ("c", "x", 0.3)))
    assert (decision, confidence) == ("y", 0.6429)


def consensus_wf(**extra: Any) -> dict[str, Any]:
    step = {"id": "vote", "type": "consensus", "method": "opinion", "params": {"q": "${{ inputs.q }}"}, **extra}
    return {"name": "c", "inputs": {"q": {"type": "string", "default": "go?"}}, "steps": [step],
            "outputs": {"decision": "${{ steps.vote.output.decision }}",
                        "confidence": "${{ steps.vote.output.confidence }}"}}


def answer_by_agent(table: dict[str, Any]):
    def handler(request: AgentRequest) -> Any:
        assert request.envelope  # consensus asks for output and confidence
        reply = table[request.agent]
        if isinstance(reply, Exception):
            raise reply
        return reply
    return handler


def test_consensus_step_end_to_end(h) -> None:
    h.agents.on("opinion", answer_by_agent({
        "npa": {"output": "yes", "confidence": 0.8},
        "wpa": {"output": "no", "confidence": 0.4},
        "bma": "yes",  # a bare answer counts with the seed's default confidence, 0.5
    }))
    h.add(consensus_wf(agents=["npa", "wpa", "bma"], strategy="majority"))
    result = h.run("c")
    assert result.status == "completed", result.error
    assert result.outputs == {"decision": "yes", "confidence": round(2 / 3, 4)}
    vote = h.steps(result.id)["vote"].output
    assert vote["opinions"]["bma"] == {"output": "yes", "confidence": 0.5}
    keys = sorted(r.idempotency_key.split(":", 1)[1] for r in h.agents.calls)
    assert keys == ["vote/bma:1", "vote/npa:1", "vote/wpa:1"]  # one key per agent asked


def test_consensus_tolerates_failures_down_to_min_agents(h) -> None:
    from progressive_cli.errors import StepError

    h.agents.on("opinion", answer_by_agent({
        "npa": {"output": "yes", "confidence": 0.8},
        "wpa": StepError("TIMEOUT", "slow"),
        "bma": {"output": "no", "confidence": 0.3},
    }))
    h.add(consensus_wf(agents=["npa", "wpa", "bma"], min_agents=2))
    result = h.run("c")
    assert result.status == "completed"
    vote = h.steps(result.id)["vote"].output
    assert vote["failed"]["wpa"]["kind"] == "TIMEOUT" and vote["decision"] == "yes"
    assert vote["confidence"] == round((0.8 + 0.3) / 2, 4)

    h.add({**consensus_wf(agents=["npa", "wpa", "bma"], min_agents=3), "name": "strict"})
    result = h.run("strict")
    assert result.status == "failed"
    assert "needs 3 opinion(s), got 2" in result.error["message"]


def test_consensus_by_capability_asks_every_provider(h) -> None:
    h.agents.on("opinion", answer_by_agent({"a1": {"output": 1, "confidence": 0.9},
                                            "a2": {"output": 2, "confidence": 0.1}}))
    h.add(consensus_wf(capability="judging"))
    result = h.run("c", capability_providers={"judging": ["a1", "a2"]})
    assert result.status == "completed" and result.outputs["decision"] == 1
    assert sorted(r.agent for r in h.agents.calls) == ["a1", "a2"]
    result = h.run("c", capability_providers={})
    assert result.status == "failed" and "no agent provides capability 'judging'" in result.error["message"]


def test_invalid_confidence_falls_back_to_the_default(h) -> None:
    h.agents.on("opinion", answer_by_agent({"npa": {"output": "x", "confidence": 7},
                                            "wpa": {"output": "y", "confidence": True}}))
    h.add(consensus_wf(agents=["npa", "wpa"]))
    vote = h.steps(h.run("c").id)["vote"].output
    assert {a: o["confidence"] for a, o in vote["opinions"].items()} == {"npa": 0.5, "wpa": 0.5}
