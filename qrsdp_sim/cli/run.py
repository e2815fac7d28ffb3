"""``qrsdp run`` (multi-day, multi-security simulation) and ``qrsdp cli`` (one session).

Every argument is checked before any simulation starts; an invalid one stops the
command with a single ``Error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from qrsdp_sim.cli.realism_options import (
    ActivityCommonOpt,
    ActivityOpt,
    ExcitationOpt,
    ExcitationScalesOpt,
    LargeOpt,
    MetaorderOpt,
    MetaorderTailOpt,
    OddLotOpt,
    PartialCancelOpt,
    PlainOpt,
    RealismArgError,
    RealismArgs,
    RealismFileOpt,
    SeasonalityOpt,
)

if TYPE_CHECKING:
    from qrsdp_sim.engine.models.base import IntensityModel
    from qrsdp_sim.engine.runner import RunResult, SessionRecord

MODELS = ("simple", "hlr", "hawkes")
HAWKES_BASES = ("simple", "hlr")


class ArgError(Exception):
    """An invalid command-line value (reported as one line, exit status 2)."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


# -- shared option declarations ---------------------------------------------------
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="Intensity model: 'simple' (SimpleImbalance), 'hlr' (HLR2014 queue-reactive curves) or "
        "'hawkes' (Hawkes self-excitation over --hawkes-base).",
    ),
]
HawkesAlphaOpt = Annotated[
    float | None,
    typer.Option(
        "--hawkes-alpha",
        help="Hawkes: excitation added per event, E <- E exp(-beta dt) + alpha (default 0.03; with --plain 0, "
        "the base model exactly). Replaces the realism layer's --excitation. Only with --model hawkes.",
    ),
]
HawkesBetaOpt = Annotated[
    float | None,
    typer.Option(
        "--hawkes-beta", help="Hawkes: decay rate beta of the excitation, 1/s (default 2; with --plain 1)."
    ),
]
HawkesCapOpt = Annotated[
    float | None,
    typer.Option(
        "--hawkes-cap", help="Hawkes: cap on the excitation; rates = base x (1 + min(E, cap)) (default 5)."
    ),
]
HawkesBaseOpt = Annotated[
    str | None,
    typer.Option("--hawkes-base", help="Hawkes: the base model, 'simple' (default) or 'hlr'."),
]
HlrCurvesOpt = Annotated[
    Path | None,
    typer.Option(
        "--hlr-curves",
        help="JSON file of HLR intensity curves (schema in docs/engine.md); default: the built-in curves. "
        "Only with --model hlr.",
    ),
]
BaseLOpt = Annotated[
    float | None,
    typer.Option("--base-L", help="SimpleImbalance: base add rate L per side (events/s; default 16, seed 20)."),
]
BaseCOpt = Annotated[
    float | None,
    typer.Option(
        "--base-C",
        help="SimpleImbalance: cancel rate per queue unit resting in the window (1/s; default 0.1, seed 0.5).",
    ),
]
BaseMOpt = Annotated[
    float | None,
    typer.Option(
        "--base-M", help="SimpleImbalance: base market-order rate M per side (events/s; default 0.42, seed 15)."
    ),
]
ImbSensOpt = Annotated[
    float | None,
    typer.Option(
        "--imbalance-sens",
        help="Imbalance sensitivity (SimpleImbalance sI, default 1; for hlr it overrides the curves' iS).",
    ),
]
CancelSensOpt = Annotated[
    float | None, typer.Option("--cancel-sens", help="SimpleImbalance: cancel sensitivity sC (default 1).")
]
EpsOpt = Annotated[
    float | None,
    typer.Option(
        "--epsilon-exec", help="SimpleImbalance: baseline execution term epsilon (balanced book; default 0.5)."
    ),
]
SpreadSensOpt = Annotated[
    float | None,
    typer.Option(
        "--spread-sens",
        help="Spread sensitivity sS of adds/executions exp(+-sS(s-2)) (default 0.4 for simple; for hlr it "
        "overrides the curves' value, 0.3 built in). 0 switches it off.",
    ),
]
LevelsOpt = Annotated[
    int, typer.Option("--levels", help="K: ticks per side the model sees (and the opening book fills).")
]
DepthOpt = Annotated[
    int,
    typer.Option(
        "--depth", help="Orders (sizes drawn as any limit order's) on each opening level and each refilled tick."
    ),
]
MarketOpenOpt = Annotated[
    str,
    typer.Option("--market-open", help="Session start as HH:MM (24 h); timestamps are ns since midnight."),
]
RealtimeOpt = Annotated[
    bool,
    typer.Option(
        "--realtime/--no-realtime", help="Pace delivery to the sinks at event time / --speed (wall clock)."
    ),
]
SpeedOpt = Annotated[
    float, typer.Option("--speed", help="With --realtime: simulated seconds per wall-clock second.")
]


@dataclass(frozen=True)
class ModelArgs:
    model: str
    hlr_curves: Path | None
    base_L: float | None
    base_C: float | None
    base_M: float | None
    imbalance_sens: float | None
    cancel_sens: float | None
    epsilon_exec: float | None
    spread_sens: float | None
    hawkes_alpha: float | None = None
    hawkes_beta: float | None = None
    hawkes_cap: float | None = None
    hawkes_base: str | None = None
    plain: bool = False  # the seed's parameters instead of the realistic defaults

    def build(self, levels: int) -> IntensityModel:
        """The model object, validated against ``levels``; raises ArgError."""
        from qrsdp_sim.engine.models import (
            HLR,
            HawkesIntensity,
            HawkesParams,
            HLRCurves,
            HLRCurvesError,
            SimpleImbalance,
        )

        if self.model not in MODELS:
            raise ArgError(f"unknown model {self.model!r} (choose from: {', '.join(MODELS)})")
        hawkes_opts = {
            "--hawkes-alpha": self.hawkes_alpha,
            "--hawkes-beta": self.hawkes_beta,
            "--hawkes-cap": self.hawkes_cap,
            "--hawkes-base": self.hawkes_base,
        }
        if self.model != "hawkes":
            for name, value in hawkes_opts.items():
                if value is not None:
                    raise ArgError(f"{name} needs --model hawkes")
        base_name = self.model
        if self.model == "hawkes":
            base_name = self.hawkes_base or "simple"
            if base_name not in HAWKES_BASES:
                raise ArgError(
                    f"unknown --hawkes-base {base_name!r} (choose from: {', '.join(HAWKES_BASES)})"
                )
        if base_name == "simple":
            if self.hlr_curves is not None:
                raise ArgError("--hlr-curves needs --model hlr (or --model hawkes --hawkes-base hlr)")
            from dataclasses import replace

            given = {
                "base_L": self.base_L,
                "base_C": self.base_C,
                "base_M": self.base_M,
                "imbalance_sens": self.imbalance_sens,
                "cancel_sens": self.cancel_sens,
                "epsilon_exec": self.epsilon_exec,
                "spread_sens": self.spread_sens,
            }
            defaults = SimpleImbalance.seed() if self.plain else SimpleImbalance()
            model: Any = replace(defaults, **{k: v for k, v in given.items() if v is not None})
        else:
            try:
                if self.hlr_curves:
                    curves = HLRCurves.load(self.hlr_curves)
                else:
                    curves = HLRCurves.seed(levels) if self.plain else HLRCurves.default(levels)
            except HLRCurvesError as exc:
                raise ArgError(f"--hlr-curves: {exc}") from None
            if self.spread_sens is not None or self.imbalance_sens is not None:
                from dataclasses import replace

                curves = replace(
                    curves,
                    spread_sensitivity=curves.spread_sensitivity
                    if self.spread_sens is None
                    else self.spread_sens,
                    imbalance_sensitivity=(
                        curves.imbalance_sensitivity if self.imbalance_sens is None else self.imbalance_sens
                    ),
                )
            model = HLR(curves=curves, curves_file=str(self.hlr_curves) if self.hlr_curves else None)
        if self.model == "hawkes":
            defaults = HawkesParams.seed() if self.plain else HawkesParams()
            params = HawkesParams(
                alpha=defaults.alpha if self.hawkes_alpha is None else self.hawkes_alpha,
                beta=defaults.beta if self.hawkes_beta is None else self.hawkes_beta,
                max_excitation=defaults.max_excitation if self.hawkes_cap is None else self.hawkes_cap,
            )
            for name, value in (("--hawkes-alpha", params.alpha), ("--hawkes-cap", params.max_excitation)):
                if not value >= 0 or value == float("inf"):
                    raise ArgError(f"{name} must be a finite number >= 0, got {value}")
            if not 0 < params.beta < float("inf"):
                raise ArgError(f"--hawkes-beta must be a finite number > 0, got {params.beta}")
            model = HawkesIntensity(base=model, hawkes=params)
        try:
            model.validate(levels)
        except ValueError as exc:
            raise ArgError(str(exc)) from None
        return model


def _check_writable_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".qrsdp-write-test-"):
            pass
    except OSError as exc:
        raise ArgError(f"{what} {str(path)!r} is not writable: {exc.strerror or exc}") from None


def _check_writable_file(path: Path, what: str) -> None:
    if path.exists() and path.is_dir():
        raise ArgError(f"{what} {str(path)!r} is a directory")
    _check_writable_dir(path.parent if str(path.parent) else Path("."), f"directory of {what}")


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# -- qrsdp run ----------------------------------------------------------------------
def run_command(
    seed: Annotated[
        int, typer.Option("--seed", help="Base seed; each session's seed derives from (seed, symbol, date).")
    ] = 42,
    days: Annotated[
        int,
        typer.Option(
            "--days",
            help="Number of consecutive weekdays to simulate; 0 = live: one trading date after another "
            "until SIGTERM/SIGINT (the sessions in progress are recorded as interrupted; exit 0).",
        ),
    ] = 1,
    seconds: Annotated[
        int, typer.Option("--seconds", help="Length of each session in simulated seconds.")
    ] = 23_400,
    p0: Annotated[
        int,
        typer.Option(
            "--p0", help="Opening price in ticks of the single security (ignored with --securities)."
        ),
    ] = 10_000,
    symbol: Annotated[
        str,
        typer.Option(
            "--symbol", help="Symbol of the single security (1-8 of A-Z0-9; ignored with --securities)."
        ),
    ] = "SIM",
    output: Annotated[
        Path,
        typer.Option("--output", help="Output directory: OUTPUT/SYMBOL/YYYY-MM-DD.qrsdp and manifest.json."),
    ] = Path("output"),
    start_date: Annotated[
        str, typer.Option("--start-date", help="First trading date, YYYY-MM-DD (a weekend rolls to Monday).")
    ] = "2026-01-02",
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Records per compressed chunk of the .qrsdp files.")
    ] = 4096,
    depth: DepthOpt = 5,
    levels: LevelsOpt = 5,
    securities: Annotated[
        str | None,
        typer.Option(
            "--securities",
            help="Several securities as SYMBOL:P0_TICKS,... e.g. AAPL:10000,MSFT:15000 (simulated in parallel).",
        ),
    ] = None,
    model: ModelOpt = "simple",
    hlr_curves: HlrCurvesOpt = None,
    base_L: BaseLOpt = None,
    base_C: BaseCOpt = None,
    base_M: BaseMOpt = None,
    imbalance_sens: ImbSensOpt = None,
    cancel_sens: CancelSensOpt = None,
    epsilon_exec: EpsOpt = None,
    spread_sens: SpreadSensOpt = None,
    market_open: MarketOpenOpt = "09:30",
    realtime: RealtimeOpt = False,
    speed: SpeedOpt = 1.0,
    perf_doc: Annotated[
        Path | None, typer.Option("--perf-doc", help="Also write the closing table as a markdown file here.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Securities simulated at the same time (threads; default 2, and with --days 0 one per "
            "security, which --realtime needs).",
            show_default=False,
        ),
    ] = None,
    kafka_brokers: Annotated[
        str | None,
        typer.Option(
            "--kafka-brokers",
            help="Also publish every event to Kafka at HOST:PORT[,HOST:PORT] (dual-write, best effort: the "
            ".qrsdp files never depend on it; failures are counted and reported).",
            envvar="QRSDP_KAFKA_BROKERS",
        ),
    ] = None,
    kafka_topic: Annotated[
        str, typer.Option("--kafka-topic", help="Topic for --kafka-brokers.")
    ] = "exchange.events",
    hawkes_alpha: HawkesAlphaOpt = None,
    hawkes_beta: HawkesBetaOpt = None,
    hawkes_cap: HawkesCapOpt = None,
    hawkes_base: HawkesBaseOpt = None,
    factor_loading: Annotated[
        float,
        typer.Option(
            "--factor-loading",
            help="Market factor loading f: every security of a date reads its imbalance shifted by "
            "-f tanh(last 1 s increment of that date's Brownian factor); 0 = independent securities.",
        ),
    ] = 0.0,
    plain: PlainOpt = False,
    realism_file: RealismFileOpt = None,
    odd_lot_share: OddLotOpt = None,
    large_order_share: LargeOpt = None,
    partial_cancel_share: PartialCancelOpt = None,
    seasonality: SeasonalityOpt = None,
    activity: ActivityOpt = None,
    activity_common: ActivityCommonOpt = None,
    excitation: ExcitationOpt = None,
    excitation_timescales: ExcitationScalesOpt = None,
    metaorder_share: MetaorderOpt = None,
    metaorder_tail: MetaorderTailOpt = None,
) -> None:
    """Simulate DAYS trading days of one or several securities into .qrsdp files with a manifest.

    By default the market is realistic (docs/realism.md): round-lot order sizes with odd lots and
    large orders, market orders that walk the queue with partial fills, partial cancels, a
    cancel-dominated message mix, U-shaped intraday activity, volatility clustering, fat tails and
    long memory of trade signs. `--plain` reproduces the seed's plain models for comparison.
    `qrsdp facts OUTPUT` scores a run against the stylized facts of real order books.
    """
    rargs = RealismArgs(
        plain,
        realism_file,
        odd_lot_share,
        large_order_share,
        partial_cancel_share,
        seasonality,
        activity,
        activity_common,
        excitation,
        excitation_timescales,
        metaorder_share,
        metaorder_tail,
    )
    margs = ModelArgs(
        model,
        hlr_curves,
        base_L,
        base_C,
        base_M,
        imbalance_sens,
        cancel_sens,
        epsilon_exec,
        spread_sens,
        hawkes_alpha,
        hawkes_beta,
        hawkes_cap,
        hawkes_base,
        plain,
    )
    try:
        spec, secs = _build_run(
            seed,
            days,
            seconds,
            p0,
            symbol,
            start_date,
            chunk_size,
            depth,
            levels,
            securities,
            margs,
            market_open,
            realtime,
            speed,
            workers,
            factor_loading=factor_loading,
            realism=rargs,
        )
        workers = _resolve_workers(workers, days, realtime, secs)
        if kafka_brokers:  # empty (e.g. QRSDP_KAFKA_BROKERS=""): no Kafka, as before
            kafka_brokers, kafka_topic = _check_kafka(kafka_brokers, kafka_topic, spec)
        _check_writable_dir(output, "output directory")
        if perf_doc is not None:
            _check_writable_file(perf_doc, "--perf-doc file")
    except ArgError as exc:
        _fail(str(exc))
    _load_kernel(spec)
    if days == 0:
        _run_live(spec, secs, output, workers, speed if realtime else None, kafka_brokers, kafka_topic, perf_doc)
        return
    publisher = None
    if kafka_brokers:
        from qrsdp_sim.kafka.publisher import KafkaPublisher

        publisher = KafkaPublisher(kafka_brokers, kafka_topic)
    result = _execute_run(spec, secs, output, workers, speed if realtime else None, publisher)
    _report(result, perf_doc, spec)
    if publisher is not None:
        _report_publish(result.manifest["publish"], output)


def _load_kernel(spec) -> None:
    """Load the compiled kernel, then let the garbage collector run again (qrsdp_sim.cli.startup: it
    was off for the start-up; the run itself loads nothing more)."""
    from qrsdp_sim.cli.startup import collection_resumed
    from qrsdp_sim.engine.runner import warm_up

    try:
        warm_up(spec.model, spec.levels_per_side, spec.realism)
    finally:
        collection_resumed()


def _resolve_workers(workers: int | None, days: int, realtime: bool, secs) -> int:
    """``--workers``: 2 by default, one per security in a live run; a paced live run needs that many."""
    if workers is None:
        return len(secs) if days == 0 else 2
    if days == 0 and realtime and workers < len(secs):
        raise ArgError(
            f"--days 0 --realtime paces every security of a date at once: --workers must be >= the number "
            f"of securities ({len(secs)}), got {workers} (or leave --workers out)"
        )
    return workers


def _check_kafka(brokers: str, topic: str, spec) -> tuple[str, str]:
    """The broker list and topic as Kafka needs them, and dates the platform's consumers accept."""
    from qrsdp_sim.engine.calendar import iter_trading_dates
    from qrsdp_sim.kafka.names import FIRST_KAFKA_DATE, LAST_KAFKA_DATE, check_brokers, check_topic

    try:
        brokers = check_brokers(brokers)
    except ValueError as exc:
        from_env = os.environ.get("QRSDP_KAFKA_BROKERS") == brokers
        raise ArgError(f"{exc}{' (from QRSDP_KAFKA_BROKERS)' if from_env else ''}") from None
    try:
        topic = check_topic(topic)
    except ValueError as exc:
        raise ArgError(str(exc)) from None
    first = next(iter_trading_dates(spec.start_date))
    last = spec.dates()[-1] if spec.days else None
    if first < FIRST_KAFKA_DATE or (last or first) > LAST_KAFKA_DATE:
        span = f"{first} .. {last}" if last else f"from {first}"
        raise ArgError(
            f"--kafka-brokers: the run's dates ({span}) leave {FIRST_KAFKA_DATE.year}-{LAST_KAFKA_DATE.year}, "
            "the years the Kafka consumers accept: choose another --start-date or --days"
        )
    return brokers, topic


def _run_live(spec, secs, output: Path, workers: int, realtime_speed: float | None, kafka_brokers: str | None,
              kafka_topic: str, perf_doc: Path | None) -> None:
    """``--days 0``: until SIGTERM/SIGINT; exit 0 after a requested stop, 1 when a session failed."""
    from qrsdp_sim.cli.run_live import execute_live, report_live_end, stop_on_signals
    from qrsdp_sim.engine.live import StopRequest
    from qrsdp_sim.kafka.names import LAST_KAFKA_DATE

    stop = StopRequest()
    with stop_on_signals(stop):  # before the publisher: its broker check can take seconds
        publisher = None
        if kafka_brokers:
            from qrsdp_sim.kafka.publisher import KafkaPublisher

            publisher = KafkaPublisher(kafka_brokers, kafka_topic)
        try:
            result = execute_live(spec, secs, output, workers, realtime_speed, publisher, stop,
                                  LAST_KAFKA_DATE if publisher is not None else None)
        except Exception as exc:
            typer.echo(f"Error: the live run failed: {type(exc).__name__}: {exc}; "
                       f"{output / 'manifest.json'} lists the sessions that finished", err=True)
            raise typer.Exit(1) from None
    _report(result, perf_doc, spec)
    report_live_end(result)
    if publisher is not None:
        _report_publish(result.manifest["publish"], output,
                        no_file={f"{e['symbol']}/{e['date']}" for e in result.interrupted})


def _build_run(
    seed,
    days,
    seconds,
    p0,
    symbol,
    start_date,
    chunk_size,
    depth,
    levels,
    securities,
    margs,
    market_open,
    realtime,
    speed,
    workers,
    *,
    factor_loading=0.0,
    realism: RealismArgs | None = None,
):
    from qrsdp_sim.engine.calendar import parse_date, parse_market_open
    from qrsdp_sim.engine.factor import MarketFactor
    from qrsdp_sim.engine.runner import RunSpec, Security, parse_securities
    from qrsdp_sim.engine.seeds import validate_symbol

    if seed < 0 or seed >= 2**63:
        raise ArgError(f"--seed must be in [0, 2**63), got {seed}")
    if days < 0:
        raise ArgError(f"--days must be >= 1, or 0 for a live run (until SIGTERM/SIGINT), got {days}")
    if seconds < 1:
        raise ArgError(f"--seconds must be >= 1, got {seconds}")
    if depth < 1:
        raise ArgError(f"--depth must be >= 1, got {depth}")
    if not 1 <= levels <= 64:
        raise ArgError(f"--levels must be in [1, 64], got {levels}")
    if chunk_size < 1:
        raise ArgError(f"--chunk-size must be >= 1, got {chunk_size}")
    if workers is not None and workers < 1:
        raise ArgError(f"--workers must be >= 1, got {workers}")
    if realtime and not speed > 0:
        raise ArgError(f"--speed must be > 0, got {speed}")
    for name, value in (
        ("--base-L", margs.base_L),
        ("--base-C", margs.base_C),
        ("--base-M", margs.base_M),
        ("--cancel-sens", margs.cancel_sens),
        ("--epsilon-exec", margs.epsilon_exec),
        ("--imbalance-sens", margs.imbalance_sens),
    ):
        if value is not None and not value >= 0:
            raise ArgError(f"{name} must be >= 0, got {value}")
    try:
        start = parse_date(start_date)
        parse_market_open(market_open)
        if securities is not None:
            secs = parse_securities(securities)
        else:
            secs = [Security(validate_symbol(symbol), p0)]
    except ValueError as exc:
        raise ArgError(str(exc)) from None
    if not abs(factor_loading) < float("inf"):
        raise ArgError(f"--factor-loading must be a finite number, got {factor_loading}")
    model = margs.build(levels)
    try:
        realism_layers = (realism or RealismArgs()).build()
    except RealismArgError as exc:
        raise ArgError(str(exc)) from None
    if factor_loading != 0.0 and not hasattr(model, "exo_loading"):
        raise ArgError(f"--factor-loading is not supported by model {model.name!r}")
    spec = RunSpec(
        base_seed=seed,
        days=days,
        start_date=start,
        session_seconds=seconds,
        levels_per_side=levels,
        initial_depth=depth,
        tick_size=100,
        market_open=market_open,
        model=model,
        realism=realism_layers,
        chunk_capacity=chunk_size,
        factor=MarketFactor(loading=factor_loading),
    )
    try:
        for sec in secs:
            spec.validate(sec.p0_ticks)
    except ValueError as exc:
        raise ArgError(f"{exc}") from None
    return spec, secs


def _report_publish(publish: dict[str, Any], output: Path, no_file: set[str] | None = None) -> None:
    """The Kafka totals; a warning with the way to close the gap when some session is incomplete.

    ``no_file``: sessions a live run interrupted (``SYMBOL/DATE``): incomplete on Kafka and without a
    file, so there is nothing to republish (their partial events stay without an end-of-session marker)."""
    from rich.console import Console

    console = Console(stderr=True)
    line = (
        f"Kafka {publish['brokers']} topic {publish['topic']} ({publish.get('client', 'confluent-kafka')}): "
        f"{publish['produced']:,} produced, "
        f"{publish['delivered']:,} delivered, {publish['failed']:,} failed"
    )
    incomplete = [k for k in publish.get("incomplete_sessions") or [] if k not in (no_file or ())]
    if no_file:
        console.print(f"Kafka: {len(no_file)} interrupted session(s) ({', '.join(sorted(no_file))}) stay "
                      "incomplete: no file, no end-of-session marker", markup=False, soft_wrap=True)
    if publish["failed"] or incomplete:
        errors = [st.get("first_error") for st in publish.get("sessions", {}).values() if st.get("first_error")]
        reason = publish.get("broker_down_at_start") or (errors[0] if errors else None)
        if reason:
            line += f" (first error: {reason})"
        files = (" ".join(str(output / f"{key}.qrsdp") for key in incomplete)
                 if incomplete and len(incomplete) <= 5 else f"{output}/*/*.qrsdp")
        console.print(f"[yellow]warning:[/yellow] {line}; {len(incomplete)} session(s) incomplete on Kafka. "
                      f"The .qrsdp files are complete; close the gap with "
                      f"`qrsdp republish {files} --kafka-brokers {publish['brokers']}`.")
    else:
        console.print(line)


def _execute_run(
    spec, secs, output: Path, workers: int, realtime_speed: float | None, publisher=None
) -> RunResult:
    from qrsdp_sim.cli.progress import run_progress
    from qrsdp_sim.engine.runner import run

    dates = spec.dates()
    day_index = {d: i for i, d in enumerate(dates)}
    total = float(spec.session_seconds * len(dates))
    with run_progress() as bar:
        tasks = {s.symbol: bar.add_task(s.symbol, total=total, date="", events=0) for s in secs}
        events_done: dict[str, int] = {s.symbol: 0 for s in secs}
        last_seen: dict[str, tuple[Any, int]] = {}

        def progress(symbol: str, date, t: float, n: int) -> None:
            prev = last_seen.get(symbol)
            if prev is not None and prev[0] != date:
                events_done[symbol] += prev[1]
            last_seen[symbol] = (date, n)
            bar.update(
                tasks[symbol],
                completed=day_index[date] * spec.session_seconds + t,
                date=date.isoformat(),
                events=events_done[symbol] + n,
            )

        return run(
            spec, secs, output, workers=workers, progress=progress, realtime_speed=realtime_speed,
            publisher=publisher,
        )


def _rows(sessions: list[SessionRecord]) -> list[list[str]]:
    rows = []
    for rec in sessions:
        r = rec.result
        rows.append(
            [
                rec.symbol,
                rec.date.isoformat(),
                f"{r.events:,}",
                _human_bytes(r.file_bytes or 0),
                f"{r.compression:.2f}x" if r.compression else "-",
                f"{r.events_per_second / 1e6:.2f} M",
                str(r.open_ticks),
                str(r.close_ticks),
            ]
        )
    return rows


HEADERS = ["Symbol", "Date", "Events", "File size", "Compression", "Events/s", "Open", "Close"]


def _plain_table(title: str, rows: list[list[str]]) -> str:
    """The sessions table as aligned plain text: what a script or a log file gets (no box drawing,
    no wrapping at 80 columns, and no rich import, ≈ 40 ms of a run's end)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(HEADERS)]  # rows may be none

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if h in ("Symbol", "Date") else c.rjust(w)
            for c, w, h in zip(cells, widths, HEADERS, strict=True)
        ).rstrip()

    return "\n".join([title, line(HEADERS), *(line(r) for r in rows)])


def _report(result: RunResult, perf_doc: Path | None, spec) -> None:
    rows = _rows(result.sessions)
    total_events = sum(r.result.events for r in result.sessions)
    title = f"QRSDP run {result.manifest['run_id'][:8]} -> {result.output_dir}"
    rate = total_events / result.wall_seconds if result.wall_seconds else 0.0
    summary = (
        f"{len(result.sessions)} sessions, {total_events:,} events in {result.wall_seconds:.2f} s "
        f"({rate / 1e6:.2f} M events/s aggregate; kernel load {result.warmup_seconds:.2f} s before); "
        f"manifest: {result.manifest_path}"
    )
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in HEADERS:
            table.add_column(h, justify="left" if h in ("Symbol", "Date") else "right")
        for row in rows:
            table.add_row(*row)
        console = Console()
        console.print(table)
        console.print(summary)
    else:
        print(_plain_table(title, rows))
        print(summary, flush=True)
    if perf_doc is not None:
        lines = [
            "# QRSDP run performance",
            "",
            f"- run_id: `{result.manifest['run_id']}`",
            f"- model: {spec.model.name}, {spec.session_seconds} s sessions, K = {spec.levels_per_side}, "
            f"depth {spec.initial_depth}, base seed {spec.base_seed}",
            f"- {summary}",
            f"- generated {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "",
            "| " + " | ".join(HEADERS) + " |",
            "|" + "|".join("---" if h in ("Symbol", "Date") else "---:" for h in HEADERS) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        perf_doc.write_text("\n".join(lines) + "\n")


# -- qrsdp cli ----------------------------------------------------------------------
def cli_command(
    seed: Annotated[
        int,
        typer.Argument(
            metavar="SEED", help="Session seed (as in a manifest's sessions[].seed), 0 <= SEED < 2**64."
        ),
    ],
    seconds: Annotated[int, typer.Argument(metavar="SECONDS", help="Session length in simulated seconds.")],
    out: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUT", help="Output .qrsdp file (default: session_SEED.qrsdp in the current directory)."
        ),
    ] = None,
    p0: Annotated[int, typer.Option("--p0", help="Opening price in ticks.")] = 10_000,
    depth: DepthOpt = 5,
    levels: LevelsOpt = 5,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Records per compressed chunk of the file.")
    ] = 4096,
    model: ModelOpt = "simple",
    hlr_curves: HlrCurvesOpt = None,
    base_L: BaseLOpt = None,
    base_C: BaseCOpt = None,
    base_M: BaseMOpt = None,
    imbalance_sens: ImbSensOpt = None,
    cancel_sens: CancelSensOpt = None,
    epsilon_exec: EpsOpt = None,
    spread_sens: SpreadSensOpt = None,
    market_open: MarketOpenOpt = "09:30",
    realtime: RealtimeOpt = False,
    speed: SpeedOpt = 1.0,
    hawkes_alpha: HawkesAlphaOpt = None,
    hawkes_beta: HawkesBetaOpt = None,
    hawkes_cap: HawkesCapOpt = None,
    hawkes_base: HawkesBaseOpt = None,
    plain: PlainOpt = False,
    realism_file: RealismFileOpt = None,
    odd_lot_share: OddLotOpt = None,
    large_order_share: LargeOpt = None,
    partial_cancel_share: PartialCancelOpt = None,
    seasonality: SeasonalityOpt = None,
    activity: ActivityOpt = None,
    activity_common: ActivityCommonOpt = None,
    excitation: ExcitationOpt = None,
    excitation_timescales: ExcitationScalesOpt = None,
    metaorder_share: MetaorderOpt = None,
    metaorder_tail: MetaorderTailOpt = None,
) -> None:
    """Simulate one session with an explicit session seed into a single .qrsdp file.

    The market-wide part of the activity factor then comes from the session seed too (a session of
    a run shares it with the date's other symbols; `qrsdp run` reproduces that)."""
    rargs = RealismArgs(
        plain,
        realism_file,
        odd_lot_share,
        large_order_share,
        partial_cancel_share,
        seasonality,
        activity,
        activity_common,
        excitation,
        excitation_timescales,
        metaorder_share,
        metaorder_tail,
    )
    from qrsdp_sim.engine.calendar import parse_market_open
    from qrsdp_sim.engine.session import SessionConfig, simulate_to_file

    margs = ModelArgs(
        model,
        hlr_curves,
        base_L,
        base_C,
        base_M,
        imbalance_sens,
        cancel_sens,
        epsilon_exec,
        spread_sens,
        hawkes_alpha,
        hawkes_beta,
        hawkes_cap,
        hawkes_base,
        plain,
    )
    path = out if out is not None else Path(f"session_{seed}.qrsdp")
    try:
        if not 0 <= seed < 2**64:
            raise ArgError(f"SEED must be in [0, 2**64), got {seed}")
        if seconds < 1:
            raise ArgError(f"SECONDS must be >= 1, got {seconds}")
        if depth < 1:
            raise ArgError(f"--depth must be >= 1, got {depth}")
        if not 1 <= levels <= 64:
            raise ArgError(f"--levels must be in [1, 64], got {levels}")
        if chunk_size < 1:
            raise ArgError(f"--chunk-size must be >= 1, got {chunk_size}")
        if realtime and not speed > 0:
            raise ArgError(f"--speed must be > 0, got {speed}")
        try:
            open_ns = parse_market_open(market_open)
        except ValueError as exc:
            raise ArgError(str(exc)) from None
        config = SessionConfig(
            seed=seed,
            p0_ticks=p0,
            session_seconds=seconds,
            levels_per_side=levels,
            initial_depth=depth,
            market_open_ns=open_ns,
            model=margs.build(levels),
            realism=rargs.build(),
            chunk_capacity=chunk_size,
        )
        try:
            config.validate()
        except ValueError as exc:
            raise ArgError(str(exc)) from None
        _check_writable_file(path, "output file")
    except (ArgError, RealismArgError) as exc:
        _fail(str(exc))
    from qrsdp_sim.engine.runner import warm_up

    warm_up(config.model, levels, config.realism)  # compile / load the kernel first, so the figure below is the simulation's
    result = simulate_to_file(config, path, realtime_speed=speed if realtime else None)
    typer.echo(
        f"{path}: {result.events:,} events, {_human_bytes(result.file_bytes or 0)} "
        f"({result.compression or 0:.2f}x), {result.events_per_second / 1e6:.2f} M events/s, "
        f"open {result.open_ticks} close {result.close_ticks}"
    )


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``cli`` to the ``qrsdp`` app."""
    app.command(
        "run", help="Simulate trading days of one or several securities into .qrsdp files + manifest.json."
    )(run_command)
    app.command("cli", help="Simulate one session (explicit session seed) into one .qrsdp file.")(cli_command)
