// Loaded just before require.js and embed-amd.js on pages with ipywidgets (see _config.yml).
// A global `require` object defined before require.js loads is taken as its configuration.
//
// embed-amd.js is several webpack bundles, each defined as a named AMD module
// (@jupyter-widgets/base, .../controls, .../html-manager/dist/libembed-amd, ...). Each bundle
// loads its Font Awesome fonts from the folder of its own module URL, and requirejs resolves
// those names beside the page (e.g. notebooks/@jupyter-widgets/*.woff2: 404). Map every one
// of them to _static/, where book/widgets-js/update.sh put the fonts next to embed-amd.js.
// The modules are defined inline by embed-amd.js, so nothing is fetched from these paths.
var require = (function () {
  var here = new URL(".", document.currentScript.src).href.replace(/\/$/, "");
  return {
    paths: {
      "@jupyter-widgets": here,
      "@jupyter-widgets/html-manager/dist": here,
    },
  };
})();
