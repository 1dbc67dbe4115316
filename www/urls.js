// Model URLs relative to the page.

export const absolute = (u) => new URL(u, location.href).href;
export const beside = (model, name) => new URL(name, absolute(model)).href;
export const isForeign = (u) => new URL(u, location.href).origin !== location.origin;
