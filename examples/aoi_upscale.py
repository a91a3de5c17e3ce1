"""Super-resolve only an area of interest: a polygon from a vector file, or a lon/lat box.

    python examples/aoi_upscale.py INPUT.tif OUTPUT.tif --aoi field.geojson
    python examples/aoi_upscale.py INPUT.tif OUTPUT.tif \
        --bbox -77.5 23.5 -77.3 23.7            # lon/lat (EPSG:4326)

``--model PATH`` runs your own weights instead of the bundled default model (``--model tiny``:
the untrained test-size model).

The output covers the smallest whole-pixel window of the input around the area (its bounding
box in the raster's CRS), with the same pixels as that window of a whole-scene run would have,
since the tile grid and the noise are tied to the scene, not to the window.
"""

from __future__ import annotations

import argparse

import rasterio

import rsisr
from rsisr.upscale import upscale_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", default=None,
                        help="a .safetensors model file, or 'tiny' (untrained); default: the bundled model")
    area = parser.add_mutually_exclusive_group(required=True)
    area.add_argument("--aoi", help="GeoJSON, GeoPackage, Shapefile... with a polygon (no CRS: EPSG:4326)")
    area.add_argument("--bbox", nargs=4, type=float, metavar=("LON_MIN", "LAT_MIN", "LON_MAX", "LAT_MAX"))
    args = parser.parse_args()

    model = rsisr.build_model("tiny") if args.model == "tiny" else args.model
    if args.aoi:
        result = upscale_file(args.input, args.output, model, aoi=args.aoi, overwrite=True)
    else:
        result = upscale_file(args.input, args.output, model, bounds=args.bbox, bounds_crs="EPSG:4326",
                              overwrite=True)
    with rasterio.open(args.input) as src, rasterio.open(result.path) as out:
        window = src.window(*out.bounds)
        print(f"{result.path}: {out.width} x {out.height} from input window "
              f"col {window.col_off:.0f}, row {window.row_off:.0f}, {window.width:.0f} x {window.height:.0f}")
        print("bounds (raster CRS):", tuple(round(v, 3) for v in out.bounds))


if __name__ == "__main__":
    main()
