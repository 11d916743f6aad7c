#!/usr/bin/env bash
# Re-fetch the JavaScript that the built book serves itself instead of loading from a CDN:
#   require.js                 (npm: requirejs)                  - AMD loader embed-amd.js needs
#   embed-amd.js               (npm: @jupyter-widgets/html-manager, dist/embed-amd.js)
#                                                                 - renders saved ipywidgets state
#   *.woff2, *.woff            (same package, dist/)              - Font Awesome for widgets
#   mathjax/tex-chtml.js       (npm: mathjax, es5/tex-chtml.js)   - renders $math$
#   mathjax/output/chtml/fonts/woff-v2/*.woff                     - fonts tex-chtml.js loads
#                                                                   relative to itself
# Usage: book/widgets-js/update.sh   (from anywhere; needs npm, tar, sha256sum)
# Then update the versions and hashes in README.md (this script prints them).
set -euo pipefail

REQUIREJS_VERSION=2.3.8
HTML_MANAGER_VERSION=1.0.15   # 1.x pairs with ipywidgets 8 (ipywidgets' __html_manager_version__)
MATHJAX_VERSION=3.2.2

here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/static"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$tmp"
npm pack --silent "requirejs@$REQUIREJS_VERSION" "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
    "mathjax@$MATHJAX_VERSION" >/dev/null
mkdir requirejs html-manager mathjax
tar -xzf "requirejs-$REQUIREJS_VERSION.tgz" -C requirejs
tar -xzf "jupyter-widgets-html-manager-$HTML_MANAGER_VERSION.tgz" -C html-manager
tar -xzf "mathjax-$MATHJAX_VERSION.tgz" -C mathjax

# Replace only what this script vendors: static/require-config.js is ours.
rm -rf "$dest/require.js" "$dest"/embed-amd.js* "$dest"/*.woff "$dest"/*.woff2 "$dest/mathjax"
mkdir -p "$dest/mathjax/output/chtml/fonts"
cp requirejs/package/require.js "$dest/require.js"
cp html-manager/package/dist/embed-amd.js "$dest/embed-amd.js"
cp html-manager/package/dist/embed.js.LICENSE.txt "$dest/embed-amd.js.LICENSE.txt"
# Font Awesome fonts (icons on buttons etc.). embed-amd.js loads them from its own folder
# (webpack publicPath = the module's URL); woff2/woff cover every current browser, the
# eot/ttf/svg copies (2.7 MB more) only matter to legacy ones.
cp html-manager/package/dist/*.woff2 html-manager/package/dist/*.woff "$dest/"
cp mathjax/package/es5/tex-chtml.js "$dest/mathjax/tex-chtml.js"
cp -r mathjax/package/es5/output/chtml/fonts/woff-v2 "$dest/mathjax/output/chtml/fonts/"
cp mathjax/package/LICENSE "$dest/mathjax/LICENSE"

echo "requirejs $REQUIREJS_VERSION, @jupyter-widgets/html-manager $HTML_MANAGER_VERSION, mathjax $MATHJAX_VERSION"
(cd "$dest" && sha256sum require.js embed-amd.js mathjax/tex-chtml.js)
du -sh "$dest"
