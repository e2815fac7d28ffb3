"""The soak's figures as a plain-text table (what ``benchmarks/chaos.py`` prints)."""

from __future__ import annotations

from qrsdp_sim.chaos.soak import Figures


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "-"


def render(f: Figures) -> str:
    c = f.config
    lines = [
        f"chaos soak, seed {c['seed']}: {f.sessions} sessions ({c['symbols']} symbols, {c['session_seconds']} s each), "
        f"wall time {f.wall_s:,.1f} s -- {'OK' if f.ok else 'FAILED'}",
        "",
        f"{'faults injected':<34}{sum(x.fired for x in f.faults):>10}   {_kinds(f.faults_by_kind)}",
        f"{'  fired when their metric stalled':<34}{sum(x.on_drain for x in f.faults):>10}",
        f"{'poison Kafka messages':<34}{sum(f.poison_sent.values()):>10}   {_kinds(f.poison_sent)}",
        f"{'  dead-lettered by the consumer':<34}{f.poison_set_aside_by_consumer:>10}",
        f"{'  missed by the consumer':<34}{f.poison_missed_by_consumer:>10}",
        f"{'dead letters by service':<34}{sum(f.dead_letters_by_service.values()):>10}   "
        f"{_kinds(f.dead_letters_by_service)}",
        f"{'hostile UDP datagrams':<34}{sum(f.datagrams_sent.values()):>10}   {_kinds(f.datagrams_sent)}",
        f"{'service exits restarted':<34}{sum(len(v) for v in f.unexpected_exits.values()):>10}   "
        f"{_kinds({k: len(v) for k, v in f.unexpected_exits.items()})}",
        f"{'sessions republished':<34}{f.republished_sessions:>10}   (attempts {f.republish_attempts})",
        "",
        f"{'messages on the topic':<34}{f.topic_messages:>10,}   (the run's own: {f.expected_messages:,})",
        f"{'events checked (lake vs files)':<34}{f.lake.get('events', 0):>10,}",
        f"{'  lake rows (copies included)':<34}{f.lake.get('rows', 0):>10,}   copies {f.lake.get('copies', 0):,} "
        f"(collapsed by stg_events)",
        f"{'  missing':<34}{f.lake.get('missing', 0):>10,}",
        f"{'  conflicting / foreign rows':<34}{f.lake.get('conflicting', 0):>10,}   / {f.lake.get('foreign', 0):,}",
        f"{'  sessions marked complete':<34}{f.lake.get('complete_markers', 0):>10}",
        f"{'dbt build':<34}{'green' if f.dbt.get('returncode') == 0 else 'FAILED':>10}   "
        f"{f.dbt.get('tests_passed', 0)} tests passed, {f.dbt.get('tests_failed', 0)} failed",
        f"{'marts: events lost / duplicated':<34}{f.marts_lost:>10,}   / {f.marts_duplicated:,}",
        "",
        f"{'ITCH messages checked':<34}{f.itch_messages_expected:>10,}   received {f.itch_messages_received:,}",
        f"{'  missing':<34}{f.itch_messages_missing:>10,}",
        f"{'  days byte-identical to export':<34}{sum(x['identical_stream'] for x in f.feed):>10}   of {len(f.feed)}",
        f"{'  stocks in order, exact':<34}{sum(x['stocks_in_order'] for x in f.feed):>10}   of "
        f"{sum(x['stocks'] for x in f.feed)}",
        f"{'  gaps / recovered':<34}{sum(x['stats'].get('gaps', 0) for x in f.feed):>10}   / "
        f"{sum(x['stats'].get('recovered', 0) for x in f.feed)}",
        f"{'  duplicates / malformed / implausible':<34}{sum(x['stats'].get('duplicates', 0) for x in f.feed):>10}"
        f"   / {sum(x['stats'].get('malformed_packets', 0) for x in f.feed)} / "
        f"{sum(x['stats'].get('implausible_seq', 0) for x in f.feed)}",
        "",
        f"{'events lost (must be 0)':<34}{f.events_lost:>10,}",
        f"{'events duplicated in marts':<34}{f.marts_duplicated:>10,}",
        f"{'ITCH messages missing (must be 0)':<34}{f.itch_messages_missing:>10,}",
        f"{'services up at the end':<34}{'all' if all(f.services_up_at_end.values()) else 'NOT ALL':>10}   "
        f"{_kinds({k: int(v) for k, v in f.services_up_at_end.items()})}",
        f"{'graceful exits':<34}{'':>10}   {_kinds({k: v for k, v in f.graceful_exits.items() if v is not None})}",
    ]
    if f.errors:
        lines += ["", "errors:", *(f"  - {e}" for e in f.errors)]
    lines += ["", "faults in order:"]
    lines += [f"  #{x.index:<3} {x.kind:<22} at {x.at:>4.0%} of {x.watch:<8} {'(drained) ' if x.on_drain else ''}"
              f"{x.outcome} [{x.seconds:.1f} s]" for x in f.faults]
    return "\n".join(lines)
