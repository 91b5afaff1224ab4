// The web console: sign in, browse a directory, upload into it, open a file's details, share.
// Everything goes through depot's own REST and GraphQL routes with the pasted token.

import {
  api, gql, session, saveSession, clearSession, claims, describe, ApiError, authHeaders,
  encodePath, arcqlString,
} from './api.js';
import { el, fill, $, bytes, when } from './dom.js';
import { UploadQueue } from './upload.js';
import { paint } from './blurhash.js';

// Entries per page (GraphQL's and the directory listing's maximum).
const PAGE = 25;
// Thumbnails are 160 px WebP variants made by depot's image transforms; where transforms are
// off (400) or cannot read the image, images up to this size are fetched whole instead, and
// larger ones keep their placeholder.
const THUMB_MAX = 8 * 1024 * 1024;
const THUMB_QUERY = '?w=160&h=160&fit=cover&format=webp';
// Thumbnails fetched at once.
const THUMB_PARALLEL = 4;

const state = {
  s: null, // the session: {token, instance}
  me: {}, // the token's claims
  inst: null, // the instance's settings
  dir: '/',
  sort: 'name ASC',
  search: '',
  cursors: [null], // `after` of each page seen so far
  page: 0,
  trash: false,
  generation: 0, // bumped on each render; late thumbnail loads of older renders are dropped
  objectUrls: [],
};

// ---------------------------------------------------------------- messages

function showError(err) {
  const dismiss = el('button', { type: 'button', onclick: () => fill($('alerts')) }, 'Dismiss');
  fill($('alerts'), el('p', { class: 'error' }, describe(err), ' ', dismiss));
}

function say(text) {
  fill($('alerts'));
  $('status').textContent = text;
}

window.addEventListener('error', (e) => showError(e.error || new Error(e.message)));
window.addEventListener('unhandledrejection', (e) => showError(e.reason));

// Runs a user action: its error becomes a message (a 401 also offers to sign in again).
async function run(fn) {
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  }
}

// ---------------------------------------------------------------- sign in

function showSignIn(focus) {
  $('app').hidden = true;
  $('who').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  if (focus) $('token').focus();
}

// The skip link moves focus without touching the address (which holds the directory).
document.querySelector('.skip').addEventListener('click', (e) => {
  e.preventDefault();
  if ($('app').hidden) $('token').focus();
  else $('main').focus();
});

async function signIn(token, instanceText) {
  const t = token.trim();
  const c = claims(t);
  const instance = instanceText.trim() || (c && typeof c.instance === 'string' ? c.instance : '');
  if (!instance) {
    throw new ApiError(0, 'BAD_REQUEST', 'the token names no instance: enter one');
  }
  const s = { token: t, instance };
  const inst = await api('GET', `/instances/${encodeURIComponent(instance)}`, { s });
  saveSession(s);
  enter(s, inst);
}

function enter(s, inst) {
  state.s = s;
  state.me = claims(s.token) || {};
  state.inst = inst;
  const who = state.me.sub ? `Signed in as ${state.me.sub}` : 'Signed in';
  const role = state.me.admin ? ' (admin)' : '';
  const exp = state.me.exp ? `; token expires ${when(new Date(state.me.exp * 1000).toISOString())}` : '';
  fill($('who'), `${who}${role} in `, el('strong', {}, s.instance), exp);
  $('who').hidden = false;
  $('signout').hidden = false;
  $('signin').hidden = true;
  $('app').hidden = false;
  fill($('alerts'));
  navigate();
  $('main').focus();
}

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  run(() => signIn($('token').value, $('instance').value));
});

$('signout').addEventListener('click', () => {
  clearSession();
  $('token').value = '';
  $('instance').value = '';
  closeDetails();
  say('Signed out.');
  showSignIn(true);
});

// ---------------------------------------------------------------- browsing

// The directory in the address (`#/docs/photos`), so back and forward work.
function dirFromHash() {
  const raw = location.hash.replace(/^#/, '');
  if (!raw.startsWith('/')) return '/';
  try {
    return decodeURIComponent(raw).replace(/\/+$/, '') || '/';
  } catch {
    return '/';
  }
}

function go(dir) {
  const target = `#${encodePath(dir) || '/'}`;
  if (location.hash === target) navigate();
  else location.hash = target;
}

function navigate() {
  state.dir = dirFromHash();
  state.cursors = [null];
  state.page = 0;
  state.trash = false;
  trashMode();
  renderCrumbs();
  run(load);
}

window.addEventListener('hashchange', () => {
  if (state.s) navigate();
});

function renderCrumbs() {
  const parts = state.dir.split('/').filter(Boolean);
  const items = [el('li', {}, el('a', { href: '#/' }, 'Home'))];
  parts.forEach((p, i) => {
    const path = `/${parts.slice(0, i + 1).join('/')}`;
    const last = i === parts.length - 1;
    items.push(el('li', {}, el('a', { href: `#${encodePath(path)}`, 'aria-current': last ? 'page' : null }, p)));
  });
  fill($('crumbs'), items);
  $('drop-dir').textContent = state.dir;
}

function listingQuery() {
  const q = state.search;
  let filter = '*';
  if (q) {
    // Word match ignores case; the wildcard also finds parts of words.
    const glob = `name * ${arcqlString(`*${q}*`)}`;
    filter = /[\p{L}\p{N}]/u.test(q) ? `name ~ ${arcqlString(q)} OR ${glob}` : glob;
  }
  return `${filter} SORT ${state.sort}`;
}

async function load() {
  if (state.trash) return loadTrash();
  const q = new URLSearchParams({ first: String(PAGE), arcql: listingQuery() });
  const after = state.cursors[state.page];
  if (after) q.set('after', after);
  const r = await api('GET', `/dirs${encodePath(state.dir)}?${q}`);
  const nodes = r.children.edges.map((e) => e.node);
  const s = r.stats;
  const what = state.search ? `matching “${state.search}” in ${state.dir}` : `in ${state.dir}`;
  $('listing-caption').textContent = `Files ${what} (${s.files} files, ${s.directories} folders, ${bytes(s.bytes)} below here)`;
  renderRows(nodes, r.children.pageInfo);
  return undefined;
}

function renderRows(nodes, pageInfo) {
  state.generation += 1;
  state.objectUrls.forEach((u) => URL.revokeObjectURL(u));
  state.objectUrls = [];
  const thumbs = [];
  const rows = nodes.map((f) => {
    const preview = el('td', { class: 'preview' });
    let name;
    if (f.isDirectory) {
      preview.append(el('span', { class: 'icon folder', 'aria-hidden': 'true' }));
      name = el('a', { href: `#${encodePath(f.path)}` }, `${f.name}/`);
    } else {
      name = el('button', { type: 'button', class: 'linkish', onclick: () => run(() => openDetails(f.hypi.id)) }, f.name);
      if (isImage(f)) thumbs.push([f, preview]);
      else preview.append(el('span', { class: 'icon file', 'aria-hidden': 'true' }));
    }
    return el(
      'tr',
      { 'data-id': f.hypi.id },
      preview,
      el('td', { class: 'name' }, name),
      el('td', { class: 'num' }, f.isDirectory ? '' : bytes(f.size)),
      el('td', {}, when(f.hypi.updated)),
      el('td', {}, f.isDirectory ? 'folder' : f.type),
    );
  });
  fill($('rows'), rows);
  $('empty').hidden = nodes.length > 0;
  $('prev').disabled = state.page === 0;
  $('next').disabled = !pageInfo.hasNextPage;
  state.next = pageInfo.endCursor;
  $('pageinfo').textContent = `Page ${state.page + 1}`;
  loadThumbs(thumbs, state.generation);
}

function isImage(f) {
  // SVG is active content: depot serves it as an attachment, never inline.
  return typeof f.type === 'string' && f.type.startsWith('image/') && !f.type.includes('svg');
}

// A blob: URL of a file's bytes, or of a variant when `query` asks for one (the download needs
// the token, which an <img> cannot send).
async function objectUrl(f, query = '') {
  const res = await fetch(f.url.path + query, { headers: authHeaders() });
  if (!res.ok) throw ApiError.of(res.status, await res.json().catch(() => null));
  const u = URL.createObjectURL(await res.blob());
  state.objectUrls.push(u);
  return u;
}

// Placeholder first (the BlurHash, when the File has one), then the image itself.
async function thumbnail(f, cell, generation) {
  const canvas = el('canvas', { class: 'thumb', 'aria-hidden': 'true' });
  cell.append(canvas);
  const rec = await api('GET', `/files/${encodeURIComponent(f.hypi.id)}`);
  if (generation !== state.generation) return;
  if (rec.blurhash && paint(canvas, rec.blurhash)) cell.dataset.placeholder = 'blurhash';
  let u;
  try {
    u = await objectUrl(f, THUMB_QUERY);
  } catch {
    if (f.size > THUMB_MAX) return;
    u = await objectUrl(f);
  }
  if (generation !== state.generation) return;
  const img = el('img', { class: 'thumb', alt: '', src: u });
  img.addEventListener('load', () => {
    canvas.replaceWith(img);
    cell.dataset.loaded = 'true';
  }, { once: true });
}

// Thumbnails load as their rows come into view (a page of large photos costs only what is
// looked at), a few at a time.
let thumbObserver = null;

function loadThumbs(list, generation) {
  if (thumbObserver) thumbObserver.disconnect();
  const fileOf = new Map(list.map(([f, cell]) => [cell, f]));
  const pending = [];
  let running = 0;
  const pump = () => {
    while (running < THUMB_PARALLEL && pending.length && generation === state.generation) {
      const cell = pending.shift();
      running += 1;
      // A thumbnail that fails keeps its placeholder; the file itself is still listed.
      thumbnail(fileOf.get(cell), cell, generation).catch(() => {}).finally(() => {
        running -= 1;
        pump();
      });
    }
  };
  thumbObserver = new IntersectionObserver((entries, observer) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      observer.unobserve(e.target);
      pending.push(e.target);
    }
    pump();
  }, { rootMargin: '200px' });
  for (const cell of fileOf.keys()) thumbObserver.observe(cell);
}

$('prev').addEventListener('click', () => {
  if (state.page > 0) state.page -= 1;
  run(load);
});

$('next').addEventListener('click', () => {
  if (!state.next) return;
  state.cursors[state.page + 1] = state.next;
  state.page += 1;
  run(load);
});

$('search-form').addEventListener('submit', (e) => {
  e.preventDefault();
  state.search = $('search').value.trim();
  state.cursors = [null];
  state.page = 0;
  run(load);
});

$('sort').addEventListener('change', () => {
  state.sort = $('sort').value;
  state.cursors = [null];
  state.page = 0;
  run(load);
});

$('newdir').addEventListener('click', () => run(async () => {
  const name = (window.prompt('Name of the new folder') || '').trim();
  if (!name) return;
  const path = `${state.dir.replace(/\/$/, '')}/${name}`;
  await api('POST', `/dirs${encodePath(path)}`);
  say(`Folder ${path} created.`);
  await load();
}));

// ---------------------------------------------------------------- trash

const TRASH_QUERY = `query($after: String) {
  find(type: File, arcql: "EXIST hypi.trashed SORT hypi.trashed DESC", first: ${PAGE}, after: $after,
       includeTrashed: true) {
    edges { node { ... on File { hypi { id trashed } name path type size isDirectory } } cursor }
    pageInfo { hasNextPage endCursor }
  }
}`;

async function loadTrash() {
  const data = await gql(TRASH_QUERY, { after: state.cursors[state.page] });
  const found = data.find;
  state.generation += 1;
  $('listing-caption').textContent = 'Trash (everything you trashed, newest first)';
  const rows = found.edges.map(({ node: f }) => el(
    'tr',
    { 'data-id': f.hypi.id },
    el('td', { class: 'preview' }, el('span', { class: `icon ${f.isDirectory ? 'folder' : 'file'}`, 'aria-hidden': 'true' })),
    el(
      'td',
      { class: 'name' },
      f.path,
      ' ',
      el('button', { type: 'button', onclick: () => run(() => setTrashed(f, false)) }, 'Untrash'),
      ' ',
      el('button', { type: 'button', class: 'danger', onclick: () => run(() => removeFile(f)) }, 'Delete forever'),
    ),
    el('td', { class: 'num' }, f.isDirectory ? '' : bytes(f.size)),
    el('td', {}, `trashed ${when(f.hypi.trashed)}`),
    el('td', {}, f.isDirectory ? 'folder' : f.type),
  ));
  fill($('rows'), rows);
  $('empty').hidden = rows.length > 0;
  $('prev').disabled = state.page === 0;
  $('next').disabled = !found.pageInfo.hasNextPage;
  state.next = found.pageInfo.endCursor;
  $('pageinfo').textContent = `Page ${state.page + 1}`;
}

// The trash view lists trashed files of every folder: uploading, search and sort do not apply.
function trashMode() {
  $('trash-view').setAttribute('aria-pressed', String(state.trash));
  $('drop').hidden = state.trash;
  $('search').disabled = state.trash;
  $('sort').disabled = state.trash;
  $('newdir').disabled = state.trash;
}

$('trash-view').addEventListener('click', () => {
  state.trash = !state.trash;
  trashMode();
  state.cursors = [null];
  state.page = 0;
  closeDetails();
  run(load);
});

async function setTrashed(f, trashed) {
  const op = trashed ? 'trash' : 'untrash';
  await gql(`mutation($q: String!) { ${op}(type: File, arcql: $q) }`, { q: `hypi.id = ${arcqlString(f.hypi.id)}` });
  say(`${f.name} ${trashed ? 'moved to the trash' : 'restored'}.`);
  if (trashed) closeDetails();
  await load();
}

async function removeFile(f) {
  if (!window.confirm(`Delete ${f.path} for good? This cannot be undone.`)) return;
  await api('DELETE', `/files/${encodeURIComponent(f.hypi.id)}`);
  say(`${f.name} deleted.`);
  closeDetails();
  await load();
}

// ---------------------------------------------------------------- uploads

const rowsOf = new Map();

const queue = new UploadQueue({
  onChange: renderUpload,
  onUploaded: () => scheduleRefresh(),
});

let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (!state.trash) run(load);
  }, 250);
}

function renderUpload(item) {
  $('uploads').hidden = false;
  let r = rowsOf.get(item);
  if (!r) {
    const progress = el('progress', { max: String(item.file.size || 1), value: '0', 'aria-label': `Upload of ${item.file.name}` });
    const status = el('span', { class: 'upload-status' });
    const cancel = el('button', { type: 'button', onclick: () => queue.cancel(item) }, 'Cancel');
    const retry = el('button', { type: 'button', onclick: () => queue.retry(item) }, 'Retry');
    const li = el('li', { 'data-name': item.file.name }, el('span', { class: 'upload-name' }, item.file.name), progress, status, cancel, retry);
    r = { li, progress, status, cancel, retry };
    rowsOf.set(item, r);
    $('queue').append(li);
  }
  r.li.dataset.state = item.state;
  if (item.handle && item.handle.via) r.li.dataset.via = item.handle.via;
  r.progress.value = item.state === 'done' ? (item.file.size || 1) : item.sent;
  const pct = item.file.size ? Math.round((100 * item.sent) / item.file.size) : 0;
  r.status.textContent = {
    queued: 'waiting',
    sending: `${pct}% of ${bytes(item.file.size)}`,
    done: `done, ${bytes(item.file.size)}`,
    failed: item.error ? describe(item.error) : 'failed',
    cancelled: 'cancelled',
  }[item.state];
  r.cancel.hidden = !(item.state === 'queued' || item.state === 'sending');
  r.retry.hidden = !(item.state === 'failed' || item.state === 'cancelled');
  r.retry.setAttribute('aria-label', `Retry ${item.file.name}`);
  r.cancel.setAttribute('aria-label', `Cancel ${item.file.name}`);
  const { sent, total } = queue.totals();
  $('overall').max = total || 1;
  $('overall').value = sent;
  const left = queue.items.filter((i) => i.state === 'queued' || i.state === 'sending').length;
  $('overall-text').textContent = `${bytes(sent)} of ${bytes(total)}${left ? `, ${left} to go` : ', finished'}`;
}

$('clear-uploads').addEventListener('click', () => {
  queue.clearFinished();
  for (const [item, r] of rowsOf) {
    if (!queue.items.includes(item)) {
      r.li.remove();
      rowsOf.delete(item);
    }
  }
  if (!queue.items.length) $('uploads').hidden = true;
});

function enqueue(files) {
  if (!state.s || !files.length) return;
  if (state.trash) {
    showError(new ApiError(0, 'BAD_REQUEST', 'leave the trash view to upload'));
    return;
  }
  queue.add(files, state.dir);
}

$('picker').addEventListener('change', () => {
  enqueue([...$('picker').files]);
  $('picker').value = '';
});

document.addEventListener('dragover', (e) => {
  if (!state.s) return;
  e.preventDefault();
  $('drop').classList.add('over');
});
document.addEventListener('dragleave', (e) => {
  if (!e.relatedTarget) $('drop').classList.remove('over');
});
document.addEventListener('drop', (e) => {
  if (!state.s) return;
  e.preventDefault();
  $('drop').classList.remove('over');
  const dt = e.dataTransfer;
  // Folders arrive as entries with no bytes; only files are uploaded.
  const folders = [...(dt.items || [])].filter((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()?.isDirectory).length;
  const files = [...dt.files].filter((f, i) => !(dt.items && dt.items[i] && dt.items[i].webkitGetAsEntry?.()?.isDirectory));
  if (folders) say(`${folders} folder(s) skipped: drop the files inside them instead.`);
  enqueue(files);
});

// ---------------------------------------------------------------- details

// The control that opened the details, to give focus back when they close.
let opener = null;

function closeDetails() {
  const wasOpen = !$('details').hidden;
  $('details').hidden = true;
  fill($('details-body'));
  if (wasOpen && opener && opener.isConnected) opener.focus();
  opener = null;
}

$('details-close').addEventListener('click', closeDetails);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !$('details').hidden) closeDetails();
});

async function openDetails(id) {
  const f = await api('GET', `/files/${encodeURIComponent(id)}`);
  opener = document.activeElement;
  renderDetails(f);
  $('details').hidden = false;
  $('details').focus();
  if (isImage(f)) {
    const canvas = $('detail-canvas');
    if (f.blurhash) paint(canvas, f.blurhash);
    const u = await objectUrl(f).catch(() => null);
    if (u && $('detail-canvas') === canvas) {
      const img = el('img', { class: 'preview-large', alt: `Preview of ${f.name}`, src: u });
      canvas.replaceWith(img);
    }
  }
  await loadShare(f);
}

function renderDetails(f) {
  const row = (k, v) => [el('dt', {}, k), el('dd', {}, v)];
  const dims = f.width && f.height ? `${f.width} × ${f.height} px` : null;
  const href = (f.url && f.url.href) || new URL(f.url.path, location.origin).href;
  fill(
    $('details-body'),
    isImage(f) ? el('canvas', { id: 'detail-canvas', class: 'preview-large', 'aria-hidden': 'true' }) : null,
    el(
      'dl',
      { class: 'record' },
      row('Name', f.name),
      row('Path', f.path),
      row('Type', f.type),
      row('Size', `${bytes(f.size)} (${f.size} bytes)`),
      dims ? row('Dimensions', dims) : null,
      row('SHA-256', el('code', { class: 'hash' }, f.sha256)),
      row('Created', when(f.hypi.created)),
      row('Modified', when(f.hypi.updated)),
      row('Owner', f.hypi.createdBy),
      row('ID', el('code', {}, f.hypi.id)),
      f.blurhash ? row('BlurHash', el('code', {}, f.blurhash)) : null,
    ),
    el(
      'div',
      { class: 'actions' },
      el('button', { type: 'button', onclick: () => run(() => download(f)) }, 'Download'),
      el('button', { type: 'button', onclick: () => run(() => copy(href, 'Link')) }, 'Copy link'),
      el('button', { type: 'button', onclick: () => run(() => setTrashed(f, true)) }, 'Move to trash'),
      el('button', { type: 'button', class: 'danger', onclick: () => run(() => removeFile(f)) }, 'Delete'),
    ),
    el('p', { id: 'copy-out', class: 'hint', hidden: true }),
    el('section', { id: 'share', 'aria-labelledby': 'share-h' }, el('h3', { id: 'share-h' }, 'Sharing')),
  );
}

// Copies text; where the clipboard is refused, shows it selected for Ctrl+C.
async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    say(`${what} copied: ${text}`);
  } catch {
    const out = $('copy-out');
    const input = el('input', { readonly: true, value: text, 'aria-label': `${what} to copy` });
    fill(out, 'Press Ctrl+C to copy: ', input);
    out.hidden = false;
    input.focus();
    input.select();
  }
}

// Downloads through a short signed link: the browser streams it to disk (a fetch would hold
// the whole file in memory), and the link carries the right to read, not the token.
async function download(f) {
  const link = await api('POST', `/files/${encodeURIComponent(f.hypi.id)}/links`, { json: { expiresIn: '5m' } });
  const a = el('a', { href: link.url, download: f.name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  say(`Downloading ${f.name}.`);
}

// ---------------------------------------------------------------- sharing

const ANONYMOUS = 'anonymous';

function grantFor(fileId, member) {
  return {
    resource: fileId,
    resourceType: 'File',
    operationType: 'Query',
    operation: '*',
    permissionType: 'RBP',
    approved: true,
    members: [{ hypi: { id: member } }],
  };
}

async function loadShare(f) {
  const box = $('share');
  if (!box) return;
  const head = el('h3', { id: 'share-h' }, 'Sharing');
  let grants;
  try {
    grants = await api('GET', `/access-rights?resource=${encodeURIComponent(f.hypi.id)}`);
  } catch (e) {
    // Only the owner and admins see and change a file's grants.
    fill(box, head, el('p', { class: 'hint' }, `Sharing is managed by the file's owner. ${describe(e)}`));
    return;
  }
  state.inst = await api('GET', `/instances/${encodeURIComponent(state.s.instance)}`);
  const members = (g) => g.members.map((m) => m.hypi.id);
  const anonymous = grants.filter((g) => members(g).includes(ANONYMOUS));

  const publicBox = el('input', { type: 'checkbox', id: 'public', checked: anonymous.length > 0 });
  publicBox.addEventListener('change', () => run(async () => {
    if (publicBox.checked) {
      await api('POST', '/access-rights', { json: grantFor(f.hypi.id, ANONYMOUS) });
      say(`${f.name} is readable without a token.`);
    } else {
      for (const g of anonymous) await api('DELETE', `/access-rights/${encodeURIComponent(g.hypi.id)}`);
      say(`Anonymous access to ${f.name} revoked.`);
    }
    await loadShare(f);
  }));

  // The grant alone is not enough: anonymous grants apply only while the instance allows
  // anonymous requests, which only its admins switch.
  const note = el('p', { id: 'public-note', class: 'hint' });
  const on = state.inst.anonymousRequests;
  const domain = state.inst.domain || state.s.instance;
  if (on && anonymous.length) {
    note.append('Anyone can download this file without a token at ', el('code', {}, f.url.href || f.url.path), '.');
  } else if (!on) {
    note.append(
      `Anonymous requests are switched off for the instance ${domain}, so `,
      anonymous.length ? 'this public grant has no effect until ' : 'a public grant takes effect only once ',
      'an admin switches them on. ',
    );
    if (state.me.admin) {
      note.append(el('button', {
        type: 'button',
        id: 'instance-switch',
        onclick: () => run(async () => {
          await api('PUT', `/instances/${encodeURIComponent(state.s.instance)}`, { json: { anonymousRequests: true } });
          say(`Anonymous requests switched on for ${domain}.`);
          await loadShare(f);
        }),
      }, `Switch anonymous requests on for ${domain}`));
    } else {
      note.append('Ask an admin of the instance.');
    }
  }

  const account = el('input', { id: 'grant-account', autocomplete: 'off', required: true });
  const grantForm = el(
    'form',
    {
      class: 'inline',
      onsubmit: (e) => {
        e.preventDefault();
        run(async () => {
          const who = account.value.trim();
          if (!who) return;
          await api('POST', '/access-rights', { json: grantFor(f.hypi.id, who) });
          say(`${who} may now read ${f.name}.`);
          await loadShare(f);
        });
      },
    },
    el('label', { for: 'grant-account' }, 'Share with account'),
    account,
    el('button', { type: 'submit' }, 'Grant read access'),
  );

  const list = el('ul', { id: 'grants', class: 'grants' }, grants.map((g) => el(
    'li',
    {},
    `${members(g).join(', ')}: ${g.operationType} ${g.operation}`,
    g.endDate ? ` until ${when(g.endDate)}` : '',
    ` (by ${g.hypi.createdBy}, ${when(g.hypi.created)}) `,
    el('button', {
      type: 'button',
      'aria-label': `Revoke the grant to ${members(g).join(', ')}`,
      onclick: () => run(async () => {
        await api('DELETE', `/access-rights/${encodeURIComponent(g.hypi.id)}`);
        say(`Grant to ${members(g).join(', ')} revoked.`);
        await loadShare(f);
      }),
    }, 'Revoke'),
  )));

  const expiry = el(
    'select',
    { id: 'link-expiry' },
    el('option', { value: '15m' }, '15 minutes'),
    el('option', { value: '1h', selected: true }, '1 hour'),
    el('option', { value: '1d' }, '1 day'),
    el('option', { value: '7d' }, '7 days'),
  );
  const links = el('ul', { id: 'links', class: 'grants' });
  const linkForm = el(
    'form',
    {
      class: 'inline',
      onsubmit: (e) => {
        e.preventDefault();
        run(async () => {
          const l = await api('POST', `/files/${encodeURIComponent(f.hypi.id)}/links`, { json: { expiresIn: expiry.value } });
          const li = el(
            'li',
            {},
            el('input', { readonly: true, value: l.url, 'aria-label': 'Signed link', class: 'link-url' }),
            ` expires ${when(l.expiresAt)} `,
            el('button', { type: 'button', onclick: () => run(() => copy(l.url, 'Signed link')) }, 'Copy'),
            el('button', {
              type: 'button',
              onclick: () => run(async () => {
                await api('DELETE', `/files/${encodeURIComponent(f.hypi.id)}/links/${encodeURIComponent(l.id)}`);
                li.remove();
                say('Signed link revoked.');
              }),
            }, 'Revoke link'),
          );
          links.append(li);
          say(`Signed link created; it works without a token until ${when(l.expiresAt)}.`);
        });
      },
    },
    el('label', { for: 'link-expiry' }, 'Signed link expiring in'),
    expiry,
    el('button', { type: 'submit' }, 'Create link'),
  );

  fill(
    box,
    head,
    el('p', {}, publicBox, ' ', el('label', { for: 'public' }, 'Public: anyone may download this file without a token')),
    note,
    grantForm,
    el('h4', {}, 'Grants on this file'),
    grants.length ? list : el('p', { class: 'hint' }, 'None: only you and the admins read it.'),
    el('h4', {}, 'Signed links'),
    linkForm,
    links,
  );
}

// ---------------------------------------------------------------- start

async function start() {
  const s = session();
  if (!s) {
    showSignIn();
    return;
  }
  try {
    const inst = await api('GET', `/instances/${encodeURIComponent(s.instance)}`, { s });
    enter(s, inst);
  } catch (e) {
    clearSession();
    showSignIn(true);
    showError(e);
  }
}

start();
