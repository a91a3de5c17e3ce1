"""Super-resolve a GeoTIFF by 4x from a GIS script, then check what came out.

    python examples/upscale_geotiff.py INPUT.tif OUTPUT.tif [--model model.safetensors] [--cog]

Without ``--model`` the bundled default model runs. ``--model tiny`` builds the untrained
test-size model instead (the output is then noise on top of bicubic, but georeferencing, masks
and tags are all real).
"""

from __future__ import annotations

import argparse
import logging

import rasterio

import rsisr
from rsisr.upscale import upscale_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", default=None,
                        help="a .safetensors model file, or 'tiny' (untrained); default: the bundled model")
    parser.add_argument("--cog", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    # None runs the bundled default model; a model file path is loaded by upscale_file itself (and
    # its sha256 goes into the tags); a model object works too, e.g. one already on the GPU that
    # several calls share.
    model = rsisr.build_model("tiny") if args.model == "tiny" else args.model
    result = upscale_file(
        args.input, args.output, model,
        tile=128, overlap=16,           # LR pixels; defaults shown
        device="auto", precision="fp32",
        co={"COMPRESS": "ZSTD"},        # any GDAL creation option (or ["COMPRESS=ZSTD"])
        cog=args.cog, overwrite=True,
        progress=True,                  # a tqdm bar on a terminal; or a callable(done, total)
    )
    print(f"{result.path}: {result.width} x {result.height}, {result.count} bands, "
          f"{result.tiles} tiles in {result.seconds:.1f} s")

    with rasterio.open(args.input) as src, rasterio.open(args.output) as out:
        print("CRS kept:       ", out.crs == src.crs)
        print("same bounds:    ", out.bounds == src.bounds)
        print("pixel size:      %.4g -> %.4g" % (src.res[0], out.res[0]))
        print("nodata:         ", src.nodata, "->", out.nodata)
        print("tags:           ", {k: v for k, v in out.tags().items() if k.startswith("RSISR_")})


if __name__ == "__main__":
    main()
