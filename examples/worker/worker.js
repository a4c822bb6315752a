let n = 0;
setInterval(() => console.log(`tick ${++n} from ${process.env.DYNO ?? 'worker'}`), 1000);
