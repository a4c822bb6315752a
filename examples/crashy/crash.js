const seconds = Number(process.env.CRASH_AFTER ?? 3);
console.log(`up; crashing in ${seconds}s`);
setTimeout(() => {
  console.error('crashing now');
  process.exit(1);
}, seconds * 1000);
