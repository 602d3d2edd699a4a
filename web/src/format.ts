/** Numbers for people, and the console's one chart: an SVG line over the last hour, drawn without a library. */

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function rate(n: number | null | undefined): string {
  return n === null || n === undefined ? '–' : `${bytes(n)}/s`;
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return '–';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

const SVG = 'http://www.w3.org/2000/svg';

/** A polyline of (t, v) over the last hour; gaps (null) break the line. */
export function lineChart(points: readonly { t: number; v: number | null }[], fmt: (n: number | null) => string): SVGSVGElement {
  const W = 320;
  const H = 100;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  const values = points.filter((p) => p.v !== null) as { t: number; v: number }[];
  if (values.length === 0) {
    const text = document.createElementNS(SVG, 'text');
    text.setAttribute('x', '8');
    text.setAttribute('y', String(H / 2));
    text.textContent = 'no samples yet';
    svg.append(text);
    return svg;
  }
  // The axis spans the samples there are, up to the last hour: a fresh worker's few samples fill the chart.
  const now = Math.max(...points.map((p) => p.t));
  const t0 = Math.max(now - 3600_000, Math.min(...points.map((p) => p.t)));
  const span = Math.max(1, now - t0);
  const max = Math.max(1, ...values.map((p) => p.v));
  const x = (t: number) => ((t - t0) / span) * W;
  const y = (v: number) => H - 4 - (v / max) * (H - 14);
  let d = '';
  let pen = false;
  for (const p of points) {
    if (p.v === null) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
    pen = true;
  }
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  path.setAttribute('class', 'line');
  const label = document.createElementNS(SVG, 'text');
  label.setAttribute('x', '4');
  label.setAttribute('y', '10');
  label.setAttribute('class', 'axis');
  label.textContent = `max ${fmt(max)} · last ${Math.max(1, Math.round(span / 60_000))} min`;
  svg.append(path, label);
  return svg;
}
