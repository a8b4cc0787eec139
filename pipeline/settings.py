"""The one typed settings object: defaults < tribes.toml < TRIBES_* environment < CLI flags."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SETTINGS_FILE = "tribes.toml"  # read from the working directory
ENV_PREFIX = "TRIBES_"
DEFAULT_MODEL = "use-multilingual-v3"  # bundled: pipeline/models/use-multilingual-v3
DEFAULT_MODEL_NAMES = {DEFAULT_MODEL, "bundled"}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # bundled too (English only)
ProfileMethod = Literal["chunk_mean", "mean", "centered_mean", "debiased_mean"]


def model_name(value: str) -> str:
    """A model name or path, stripped; a blank one is refused."""
    if not value.strip():
        raise ValueError("model must name a sentence-transformers model or a local path")
    return value.strip()


ModelName = Annotated[str, AfterValidator(model_name)]


def time_zone(value: str) -> str:
    """An IANA time zone name (Europe/Paris, UTC); anything else is refused."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Paris)") from None
    return value


TimeZone = Annotated[str, AfterValidator(time_zone)]

CRAWL_SETTINGS = {
    "sources",
    "user_agent",
    "contact",
    "crawl_delay",
    "crawl_concurrency_per_domain",
    "crawl_retries",
    "crawl_batch_size",
}


class Settings(BaseSettings):
    """Every tunable of Tribes, validated. Field names double as `TRIBES_<NAME>` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        toml_file=SETTINGS_FILE,
        extra="forbid",
        validate_default=True,
    )

    # where things live
    db: Path = Field(Path(".tribes/tribes.duckdb"), description="DuckDB database file")
    state_dir: Path | None = Field(
        None, description="caches, Prefect results, reports; default: the database's folder"
    )
    lock_wait_seconds: float = Field(
        900.0,
        ge=0.0,
        description="how long a refresh waits for another writer's lock or another refresh",
    )
    reports_url: str | None = Field(
        None, description="URL serving reports_dir (`make serve` sets it) for links in the UI"
    )
    keep_runs: int = Field(
        30, ge=1, description="refresh runs kept (rows and report folders); older ones are pruned"
    )
    notify_url: HttpUrl | None = Field(
        None, description="http(s) URL a failed or crashed nightly or refresh run POSTs JSON to"
    )

    # embed
    model: ModelName = Field(DEFAULT_MODEL, description="sentence-transformers model name or path")
    model_download: bool = Field(
        False, description="fetch a model name from the Hugging Face hub when it is not cached"
    )
    query_prefix: str | None = Field(
        None, description="text put before every post; None = automatic ('query: ' for E5)"
    )
    batch_size: int = Field(64, ge=1, le=4096)
    max_seq_length: int = Field(256, ge=8, le=8192)
    device: str | None = Field(None, description="torch device; None = CUDA when present")
    embed_chunk: int = Field(4096, ge=64, description="posts embedded and stored per chunk")
    embed_backend: Literal["torch", "openvino", "onnx", "onnx-int8"] = Field(
        "openvino",
        description="CPU inference runtime (exported once into the cache); torch on CUDA, "
        "or when the runtime is not installed or the export fails (bench/embed.py measures them)",
    )
    embed_dask_address: str | None = Field(
        None,
        min_length=1,
        description="Dask scheduler (e.g. tcp://host:8786) that embeds new posts, sharded; "
        "needs the `dask` extra and workers that see the state folder at the same path",
    )
    embed_dask_workers: int = Field(
        0,
        ge=0,
        le=1024,
        description="0 = embed in this process; N = a temporary local Dask cluster of "
        "N single-threaded worker processes embeds new posts, sharded",
    )

    # clean
    max_post_chars: int = Field(
        20_000,
        ge=100,
        le=100_000,
        description="longer posts are skipped (and counted) on import and crawl; at most 100,000 "
        "(the embedder's memory grows with text length: ~6 GB per million characters)",
    )
    min_posts_per_user: int = Field(3, ge=1, description="users with fewer posts are not clustered")

    # profile
    profile_method: ProfileMethod = Field(
        "chunk_mean", description="how a user's posts become one profile"
    )
    profile_chunk_chars: int | None = Field(
        None,
        ge=100,
        le=20_000,
        description="chunk_mean: characters of posts per embedded chunk; None = 2,000 for the "
        "default model (no token limit), 4 per token of max_seq_length for others",
    )
    behaviour_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="posting times, post kinds and interactions beside the words (0 = words only)",
    )
    profile_remove_components: int = Field(
        3, ge=0, le=50, description="shared directions projected out by debiased_mean"
    )

    # reduce
    umap_n_neighbors: int | None = Field(
        None, ge=2, description="UMAP's neighbourhood size; None = scaled to the users"
    )
    umap_n_components: int = Field(
        5, ge=2, le=100, description="dimensions UMAP reduces the profiles to before clustering"
    )
    umap_min_dist: float = Field(0.0, ge=0.0, le=1.0)
    random_state: int = Field(42, description="seed of every random step: same seed, same clusters")
    consensus_runs: int = Field(
        10,
        ge=1,
        le=50,
        description="UMAP + HDBSCAN runs (seeds random_state + i) combined; 1 = one",
    )

    # cluster
    min_cluster_size: int | None = Field(
        None, ge=2, description="smallest interest group HDBSCAN keeps; None = scaled to the users"
    )
    min_samples: int | None = Field(None, ge=1)
    clusters: int | None = Field(
        None,
        ge=2,
        description="coarse groups: the cluster tree cut at N (big clusters split if fewer); "
        "None = auto",
    )

    # label
    top_terms: int = Field(10, ge=1, le=100)
    representative_posts: int = Field(3, ge=1, le=50)
    label_terms: int = Field(3, ge=1, le=10)

    # behaviour (pipeline/behaviour.py: activity, engagement, interactions per cluster)
    timezone: TimeZone = Field(
        "UTC",
        description="IANA time zone of the posting-time heatmap and best hours (e.g. Europe/Paris)",
    )
    min_kind_posts: int = Field(
        5, ge=1, description="a post kind needs this many posts in a cluster to rank its engagement"
    )

    # crawl (scrapers/, `tribes crawl`)
    sources: Path = Field(Path("sources.yaml"), description="what `tribes crawl` collects")
    user_agent: str = Field(
        "TribesBot/0.1 (research crawler)",
        min_length=8,
        description="identifies the crawler to sites (the `contact` is added to it)",
    )
    contact: str | None = Field(
        None,
        min_length=3,
        pattern=r"^[^\s()]+$",
        description="how sites reach you (a URL or e-mail), sent in the User-Agent: set it",
    )
    crawl_delay: float = Field(
        1.0, ge=0.0, description="least seconds between requests to a host, across all sources"
    )
    crawl_concurrency_per_domain: int = Field(2, ge=1, le=64)
    crawl_retries: int = Field(3, ge=0, le=10, description="retries of a 429/5xx/network failure")
    crawl_batch_size: int = Field(1000, ge=1, description="posts per DuckDB transaction")

    # recommend (products from `tribes products import`)
    recommend_top: int = Field(5, ge=1, le=100, description="products kept per cluster and user")

    # people (`tribes people`, pipeline/people.py)
    people_min_score: float = Field(
        0.9, ge=0.0, le=1.0, description="`tribes people suggest` lists pairs scoring this or more"
    )
    people_candidates: int = Field(
        10,
        ge=1,
        le=100,
        description="nearest accounts on other platforms each one is compared with",
    )
    auto_link_min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="suggested pairs scoring this or more count as one person; None = never",
    )

    @model_validator(mode="after")
    def _one_dask_cluster(self) -> Settings:
        if self.embed_dask_address and self.embed_dask_workers:
            raise ValueError("set embed_dask_address or embed_dask_workers, not both")
        return self

    @model_validator(mode="after")
    def _state_beside_db(self) -> Settings:
        if self.state_dir is None:
            self.state_dir = self.db.parent
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def state(self) -> Path:
        assert self.state_dir is not None  # set by _state_beside_db
        return self.state_dir

    @property
    def chunk_chars(self) -> int:
        """Characters of posts per embedded chunk: profile_chunk_chars, or what the model reads."""
        if self.profile_chunk_chars:
            return self.profile_chunk_chars
        return 2000 if self.model in DEFAULT_MODEL_NAMES else 4 * self.max_seq_length

    @property
    def rhythm_timezone(self) -> str | None:
        """The time zone the profiles read posting rhythm in; None while behaviour_weight is 0
        (the words alone), so a changed `timezone` then leaves profiles and clusters cached."""
        return self.timezone if self.behaviour_weight else None

    @property
    def cache_dir(self) -> Path:
        return self.state / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.state / "reports"

    def analysis_fingerprint(self) -> dict[str, object]:
        """The settings that change a refresh's results (not where files live)."""
        where = {
            "db",
            "state_dir",
            "device",
            "embed_chunk",
            "embed_dask_address",
            "embed_dask_workers",
            "model_download",
            "lock_wait_seconds",
            "reports_url",
            "keep_runs",
            "notify_url",
        }
        return self.model_dump(mode="json", exclude=where | CRAWL_SETTINGS)


REFRESH_OPTIONS = (  # the settings one refresh may override (CLI flags, flow parameters)
    "model",
    "profile_method",
    "min_cluster_size",
    "clusters",
    "umap_n_components",
    "umap_n_neighbors",
    "random_state",
    "behaviour_weight",
)


class Options(BaseModel):
    """Settings overridden for one run; None (or absent) keeps the setting. Unknown names are
    refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def apply(self, settings: Settings) -> Settings:
        """`settings` with the options given here (validated already, by the settings' types)."""
        return settings.model_copy(update=self.model_dump(exclude_none=True))


def optional(name: str) -> tuple[object, FieldInfo]:
    """A setting as an option: its type and constraints, or None; its description (its help
    line in `tribes refresh --help` and the deployments' form: required)."""
    setting = Settings.model_fields[name]
    if not setting.description:
        raise TypeError(f"refresh option {name} needs a description in Settings (its help line)")
    kind = (
        Annotated[(setting.annotation, *setting.metadata)]
        if setting.metadata
        else setting.annotation
    )
    return kind | None, Field(None, description=setting.description)


RefreshOptions = create_model(
    "RefreshOptions",
    __base__=Options,
    __doc__="The analysis settings one refresh may override (the CLI's flags, the refresh and "
    "nightly flows' `options`); None keeps the setting.",
    **{name: optional(name) for name in REFRESH_OPTIONS},
)


class SettingsError(ValueError):
    """The settings file cannot be read, in one line naming it."""


def load_settings(**overrides: object) -> Settings:
    """Settings with CLI-style overrides; `None` overrides mean 'not given'."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{settings_file()} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read {settings_file()}: {exc.strerror}") from None


def settings_file() -> Path:
    return Path(SETTINGS_FILE).resolve()


def closest_setting(name: str) -> str | None:
    """The setting whose name is nearest to a mistyped `name`, if any is close."""
    found = difflib.get_close_matches(name.lower(), Settings.model_fields, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each TRIBES_* variable that names no setting (it is ignored)."""
    warnings = []
    for variable in sorted(environ):
        name = variable[len(ENV_PREFIX) :].lower()
        if variable.upper().startswith(ENV_PREFIX) and name not in Settings.model_fields:
            near = closest_setting(name)
            hint = f": did you mean {ENV_PREFIX}{near.upper()}?" if near else ""
            warnings.append(f"{variable} is not a Tribes setting and is ignored{hint}")
    return warnings
