"""Result model: one :class:`Result` per (scenario, system), holding every repetition."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    unit: str
    better: Better
    jobs: int
    description: str


@dataclass
class Result:
    scenario: str
    system: str
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    capped: bool = False  # a repetition hit the time cap: the value is a partial rate
    skipped: str | None = None  # why there is no value

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def low(self) -> float | None:
        return min(self.values) if self.values else None

    @property
    def high(self) -> float | None:
        return max(self.values) if self.values else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(median=self.median, min=self.low, max=self.high)
        return out


@dataclass
class Run:
    """Everything one ``python -m benchmarks`` invocation measured."""

    command: str
    mode: str
    scale: float
    machine: dict[str, str]
    systems: dict[str, dict[str, Any]]  # name -> {version, settings, skipped}
    scenarios: list[Scenario] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # profile summary, job-log lag, ...
    started_at: str = ""
    duration_s: float = 0.0

    def result(self, scenario: str, system: str) -> Result:
        for r in self.results:
            if r.scenario == scenario and r.system == system:
                return r
        r = Result(scenario, system)
        self.results.append(r)
        return r

    def scenario(self, key: str) -> Scenario:
        for s in self.scenarios:
            if s.key == key:
                return s
        raise KeyError(key)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        run = cls(
            command=data["command"],
            mode=data["mode"],
            scale=data["scale"],
            machine=data["machine"],
            systems=data["systems"],
            scenarios=[Scenario(**s) for s in data["scenarios"]],
            extra=data.get("extra", {}),
            started_at=data.get("started_at", ""),
            duration_s=data.get("duration_s", 0.0),
        )
        fields = ("scenario", "system", "values", "notes", "capped", "skipped")
        run.results = [Result(**{k: r[k] for k in fields}) for r in data["results"]]
        return run

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "mode": self.mode,
            "scale": self.scale,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "machine": self.machine,
            "systems": self.systems,
            "scenarios": [asdict(s) for s in self.scenarios],
            "results": [r.to_json() for r in self.results],
            "extra": self.extra,
        }
