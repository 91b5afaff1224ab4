// BlurHash decoding (the algorithm of https://github.com/woltapp/blurhash, written out here so
// the console loads nothing from elsewhere): a hash is a grid of cosine components, the first
// the average colour, each encoded in base 83.

const CHARS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~';

function base83(s) {
  let v = 0;
  for (const c of s) {
    const i = CHARS.indexOf(c);
    if (i < 0) throw new Error(`not a BlurHash character: ${c}`);
    v = v * 83 + i;
  }
  return v;
}

function toLinear(v) {
  const x = v / 255;
  return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
}

function toSrgb(v) {
  const x = Math.max(0, Math.min(1, v));
  return x <= 0.0031308
    ? Math.round(x * 12.92 * 255 + 0.5)
    : Math.round((1.055 * x ** (1 / 2.4) - 0.055) * 255 + 0.5);
}

const signedSquare = (v) => Math.sign(v) * v * v;

// RGBA pixels (width x height) of a hash; throws on a malformed hash.
export function decode(hash, width, height) {
  if (typeof hash !== 'string' || hash.length < 6) throw new Error('BlurHash too short');
  const size = base83(hash[0]);
  const ny = Math.floor(size / 9) + 1;
  const nx = (size % 9) + 1;
  if (hash.length !== 4 + 2 * nx * ny) throw new Error('BlurHash length does not match its size');
  const maxAc = (base83(hash[1]) + 1) / 166;
  const colors = [];
  const dc = base83(hash.slice(2, 6));
  colors.push([toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]);
  for (let i = 1; i < nx * ny; i++) {
    const v = base83(hash.slice(4 + i * 2, 6 + i * 2));
    colors.push([
      signedSquare((Math.floor(v / 361) - 9) / 9) * maxAc,
      signedSquare((Math.floor(v / 19) % 19 - 9) / 9) * maxAc,
      signedSquare((v % 19 - 9) / 9) * maxAc,
    ]);
  }
  const px = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let j = 0; j < ny; j++) {
        const cy = Math.cos((Math.PI * y * j) / height);
        for (let i = 0; i < nx; i++) {
          const basis = Math.cos((Math.PI * x * i) / width) * cy;
          const c = colors[i + j * nx];
          r += c[0] * basis;
          g += c[1] * basis;
          b += c[2] * basis;
        }
      }
      const o = 4 * (x + y * width);
      px[o] = toSrgb(r);
      px[o + 1] = toSrgb(g);
      px[o + 2] = toSrgb(b);
      px[o + 3] = 255;
    }
  }
  return px;
}

// Paints a hash into a canvas (32 x 32; CSS scales it); false when the hash is malformed.
export function paint(canvas, hash) {
  try {
    const w = 32;
    const h = 32;
    const px = decode(hash, w, h);
    canvas.width = w;
    canvas.height = h;
    canvas.getContext('2d').putImageData(new ImageData(px, w, h), 0, 0);
    return true;
  } catch {
    return false;
  }
}
