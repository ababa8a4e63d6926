// Media behind authentication: fetched with the access token as blobs and
// shown through object URLs, cached per URI and size for the session.

import { useEffect, useState } from "preact/hooks";

import type { Api } from "./api";

const cache = new Map<string, Promise<string>>();

export function mediaUrl(api: Api, mxc: string, thumbnail?: { width: number; height: number }): Promise<string> {
  const key = thumbnail ? `${mxc}#${thumbnail.width}x${thumbnail.height}` : mxc;
  let url = cache.get(key);
  if (!url) {
    url = api.mediaBlob(mxc, thumbnail).then((blob) => URL.createObjectURL(blob));
    // A failure is not cached: the next render tries again.
    url.catch(() => cache.delete(key));
    cache.set(key, url);
  }
  return url;
}

/** Revokes every object URL (on logout). */
export function clearMediaCache(): void {
  for (const url of cache.values()) url.then(URL.revokeObjectURL, () => {});
  cache.clear();
}

/** The object URL of a medium, once loaded; `failed` if it could not be. */
export function useMediaUrl(api: Api, mxc: string | undefined, thumbnail?: { width: number; height: number }): { url?: string; failed: boolean } {
  const [result, setResult] = useState<{ url?: string; failed: boolean }>({ failed: false });
  const width = thumbnail?.width;
  const height = thumbnail?.height;
  useEffect(() => {
    if (!mxc) return;
    let live = true;
    let attempt = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = () => {
      const size = width && height ? { width, height } : undefined;
      mediaUrl(api, mxc, size).then(
        (url) => live && setResult({ url, failed: false }),
        () => {
          if (!live) return;
          // The server may be restarting: try a few times before giving up.
          attempt += 1;
          if (attempt < 5) timer = setTimeout(load, 1000 * attempt);
          else setResult({ failed: true });
        },
      );
    };
    load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [api, mxc, width, height]);
  return result;
}
