"""`dvc plots show` without network. DVC's page loads Vega, Vega-Lite and vega-embed from a CDN, so
offline only its PNGs show. `make setup` fetches the same three packages from the npm registry
(`npm pack`, into .vega/), and this module writes an HTML template with their scripts inlined, which
.dvc/config.local names (`plots.html_template`): every page `dvc plots show` writes is then whole in
itself (about 1 MB), drawn without network, also when copied elsewhere.

    python -m pipeline.tools.plots_page packages       the npm packages DVC's page asks for (name@version)
    python -m pipeline.tools.plots_page build .vega    .vega/<name>-<version>.tgz -> .vega/dvc_plots.html

The versions are read from the installed DVC (dvc_render), so the template follows a DVC upgrade.
"""
from __future__ import annotations

import argparse
import re
import sys
import tarfile
from pathlib import Path

from pipeline.core.errors import PipelineError, one_line

TEMPLATE = "dvc_plots.html"
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")  # what DVC replaces in a template


def packages() -> list[tuple[str, str]]:
    """(name, version) of each script DVC's Vega renderer loads from its CDN, in its order."""
    from dvc_render.vega import VegaRenderer

    found = re.findall(r'src="https://cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)"', VegaRenderer.SCRIPTS)
    if not found:
        raise PipelineError("the installed DVC names no Vega scripts in dvc_render.vega.VegaRenderer.SCRIPTS: "
                            "pipeline/tools/plots_page.py needs updating for this DVC version")
    return found


def script(tarball: Path, name: str) -> str:
    """`package/build/<name>.min.js` of an npm tarball, ready to sit inside a <script> element."""
    member = f"package/build/{name}.min.js"
    try:
        with tarfile.open(tarball) as tar:
            text = tar.extractfile(member).read().decode("utf-8")
    except (OSError, KeyError, AttributeError, tarfile.TarError, UnicodeDecodeError) as e:
        raise PipelineError(f"{tarball}: no readable {member} ({e}); run `make setup` again") from None
    clash = [p for p in PLACEHOLDERS if p in text]
    if clash:  # DVC would replace it inside the script
        raise PipelineError(f"{tarball}: {member} contains DVC's placeholder {clash[0]}; it cannot be inlined")
    return text.replace("</script", "<\\/script")


def build(folder: Path) -> Path:
    """Writes folder/dvc_plots.html: DVC's own page with the npm packages' scripts inlined."""
    from dvc_render.html import PAGE_HTML

    inline = []
    for name, version in packages():
        tarball = folder / f"{name}-{version}.tgz"
        if not tarball.is_file():
            raise PipelineError(f"{tarball} not found: `npm pack {name}@{version} --pack-destination {folder}` "
                                "fetches it (make setup does)")
        inline.append(f"<script>/* {name}@{version}, inlined from npm */\n{script(tarball, name)}\n</script>")
    page = PAGE_HTML.replace("{scripts}", "\n".join(inline))
    out = folder / TEMPLATE
    out.write_text(page, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.plots_page", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("packages", help="print the npm packages (name@version) DVC's plots page loads")
    b = actions.add_parser("build", help="write FOLDER/dvc_plots.html from the npm tarballs in FOLDER")
    b.add_argument("folder", type=Path)
    args = parser.parse_args(argv)

    def run() -> None:
        print(" ".join(f"{n}@{v}" for n, v in packages()) if args.action == "packages"
              else f"wrote {build(args.folder)}")

    return one_line(run)


if __name__ == "__main__":
    sys.exit(main())
