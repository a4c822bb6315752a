// The data API's documents (seed 002): one per stored blob.
import type { BlobInfo } from '../store/blobs.js';
import type { Base } from './base.js';

export function dataUrl(base: Base): string {
  return `${base.http}/data`;
}

export function blobDocument(base: Base, info: BlobInfo) {
  const self = `${dataUrl(base)}/${info.id}`;
  return {
    id: info.id,
    checksum: `sha256:${info.id}`,
    size: info.size,
    used_at: info.usedAt.toISOString(),
    self,
    blob: `${self}/blob`,
  };
}
