import type { Base } from './base.js';
import { statusUrl, type ProcessView } from './status.js';
import { liveDetail, sampleDocument, stageDocument } from './usage.js';

/** Totals per stage (every run so far, and the last), the current sample and recent ones. */
export function metricsDocument(base: Base, p: Pick<ProcessView, 'slug' | 'metrics'>, sampleIntervalMs: number) {
  const m = p.metrics;
  return {
    slug: p.slug,
    status: statusUrl(base, p.slug),
    build: stageDocument(m.build),
    run: stageDocument(m.run),
    current: liveDetail(m.live),
    sample_interval_ms: sampleIntervalMs,
    samples: m.samples.map(sampleDocument),
  };
}
