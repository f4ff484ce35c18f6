// Small DOM and storage helpers shared by the page's modules.

/** An element with properties (or attributes, for names like aria-*) and text or element children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children); // strings become text nodes
  return node;
}

/** localStorage that never throws: storage may be disabled, or full (set then returns false). */
export const storage = {
  get(name) {
    try { return localStorage.getItem(name) || ""; } catch { return ""; }
  },
  set(name, value) {
    try {
      if (value) localStorage.setItem(name, value);
      else localStorage.removeItem(name);
      return true;
    } catch {
      return false;
    }
  },
};
