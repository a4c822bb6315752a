// One reader of the package version; the release cache keys remembered build failures by it too.
export { version } from '../release/version.js';
