#!/usr/bin/env bash
# Refreshes the vendored browser libraries under static/vendor from npm (maintainers
# only: running or installing runtime never needs Node.js). Each library keeps its
# licence next to it; static/vendor/VERSIONS lists what was taken.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo '{"name":"runtime-ui-vendor","version":"0.0.0","private":true}' > package.json
# Pinned: a refresh is a deliberate change of these numbers (then run the UI tests).
npm install --no-audit --no-fund --silent \
  @codemirror/state@6.7.6 @codemirror/view@6.44.2 @codemirror/language@6.13.1 \
  @codemirror/commands@6.11.2 @codemirror/lint@6.9.8 @codemirror/lang-yaml@6.1.3 \
  @codemirror/merge@6.12.3 @dagrejs/dagre@3.1.4 chart.js@4.6.2
rm -rf "$out" && mkdir -p "$out"
nm="$work/node_modules"
# ES modules, resolved by the import map in index.html
for pkg in @codemirror/state @codemirror/view @codemirror/language @codemirror/commands \
  @codemirror/lint @codemirror/lang-yaml @codemirror/merge @codemirror/autocomplete \
  @codemirror/streamparser @lezer/common @lezer/highlight @lezer/lr @lezer/yaml; do
  mkdir -p "$out/$pkg" && cp "$nm/$pkg/dist/index.js" "$out/$pkg/index.js"
  cp "$nm/$pkg/LICENSE" "$out/$pkg/LICENSE"
done
mkdir -p "$out/@marijn/find-cluster-break" "$out/crelt" "$out/style-mod" "$out/w3c-keyname"
cp "$nm/@marijn/find-cluster-break/src/index.js" "$nm/@marijn/find-cluster-break/LICENSE" "$out/@marijn/find-cluster-break/"
cp "$nm/crelt/index.js" "$nm/crelt/LICENSE" "$out/crelt/"
cp "$nm/style-mod/src/style-mod.js" "$out/style-mod/index.js" && cp "$nm/style-mod/LICENSE" "$out/style-mod/"
cp "$nm/w3c-keyname/index.js" "$nm/w3c-keyname/LICENSE" "$out/w3c-keyname/"
# classic scripts (self-contained builds that define a global)
mkdir -p "$out/dagre" "$out/chart.js"
cp "$nm/@dagrejs/dagre/dist/dagre.min.js" "$nm/@dagrejs/dagre/LICENSE" "$out/dagre/"
cp "$nm/chart.js/dist/chart.umd.min.js" "$out/chart.js/chart.umd.min.js"
cp "$nm/chart.js/LICENSE.md" "$out/chart.js/LICENSE.md"
# strip the source-map comments: the maps are not vendored
find "$out" -type f -name '*.js' -exec sed -i '/^\/\/# sourceMappingURL=/d' {} +
(cd "$nm" && for p in */package.json @*/*/package.json; do
  node -e "const j=require('./$p');console.log(j.name+'@'+j.version+' '+j.license)"
done) | sort > "$out/VERSIONS"
