import t from 'tap';
import {
  cursorAt,
  eventLine,
  lineId,
  lineJson,
  lineType,
  outputLine,
  outputText,
  segmentName,
  segmentStart,
  validLineId,
} from '../../lib/store/event-log/line.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

t.test('lineId reads the id prefix of our lines and rejects anything else', async (t) => {
  t.equal(lineId('{"id":42,"time":"x","type":"y"}'), 42);
  t.equal(lineId(Buffer.from('xx{"id":7,"a":1}'), 2), 7);
  t.equal(lineId('{"id":,"x":1}'), -1);
  t.equal(lineId('{"id":12}'), -1, 'a comma must follow the id');
  t.equal(lineId('{"ids":1,'), -1);
  t.equal(lineId(''), -1);
});

t.test('an event line is one JSON object with id, time and type first, then the fields', async (t) => {
  const line = eventLine(3, 'state', { from: null, to: 'pending', why: 'a "quoted" \u00e9' });
  t.ok(line.endsWith('}\n'));
  t.equal(line.indexOf('\n'), line.length - 1, 'one line');
  t.ok(line.startsWith('{"id":3,"time":"'));
  const v = JSON.parse(line);
  t.same(Object.keys(v), ['id', 'time', 'type', 'from', 'to', 'why']);
  t.match(v, { id: 3, type: 'state', from: null, to: 'pending', why: 'a "quoted" \u00e9' });
  t.match(v.time, ISO);
  t.same(JSON.parse(eventLine(4, 'agent_restarted')), { id: 4, time: v.time, type: 'agent_restarted' }, 'no fields');
  t.same(JSON.parse(eventLine(5, 'x', {})), { id: 5, time: v.time, type: 'x' }, 'empty fields');
  t.equal(lineId(line), 3);
  t.equal(lineType(line), 'state');
});

t.test('an output line holds its stream and text, escaped', async (t) => {
  const text = 'tab\there "q" \\ \u0001 \u00e9 \u{1F600}';
  const line = outputLine(9, 'stderr', text);
  const v = JSON.parse(line);
  t.same(Object.keys(v), ['id', 'time', 'type', 'stream', 'text']);
  t.match(v, { id: 9, type: 'output', stream: 'stderr', text });
  t.match(v.time, ISO);
  t.equal(line.indexOf('\n'), line.length - 1, 'a newline in the text cannot break the line');
  t.equal(outputLine(1, 'stdout', 'a\nb').split('\n').length, 2);
  t.equal(lineType(line), 'output');
  t.equal(outputText(line), text);
  t.equal(outputText(eventLine(10, 'state', { text: 'not output' })), undefined, 'other events have no output text');
});

t.test('lines of one synchronous run share one time; a later run reads the clock again', async (t) => {
  const a = JSON.parse(eventLine(1, 'a')).time;
  const b = JSON.parse(outputLine(2, 'stdout', 'x')).time;
  t.equal(a, b);
  await new Promise((r) => setTimeout(r, 5));
  const c = JSON.parse(eventLine(3, 'c')).time;
  t.ok(Date.parse(c) > Date.parse(a), `${c} after ${a}`);
});

t.test('lineType reads the type without parsing; a line without one has none', async (t) => {
  t.equal(lineType('{"id":1,"time":"t","type":"lines_dropped","count":2}\n'), 'lines_dropped');
  t.equal(lineType('{"id":1}'), '');
});

t.test('lineJson is the event without its newline', async (t) => {
  const line = eventLine(1, 'x', { a: 1 });
  t.equal(lineJson(line), line.trimEnd());
  t.same(JSON.parse(lineJson(line)), JSON.parse(line));
});

t.test('validLineId accepts only whole events', async (t) => {
  t.equal(validLineId(eventLine(12, 'x', { a: 'b' }).trimEnd()), 12);
  t.equal(validLineId('{"id":6,"time":"2024-01-01T00:00:00.000Z","type":"out'), null, 'torn');
  t.equal(validLineId('\0\0\0\0'), null, 'garbage');
  t.equal(validLineId('{"id":0,"type":"x"}'), null, 'ids start at 1');
  t.equal(validLineId('{"id":5,"time":"t"}'), null, 'no type');
  t.equal(validLineId('{"id":5,"time":"t","type":1}'), null, 'type not a string');
  t.equal(validLineId('{"id":5,"id":6,"type":"x"}'), null, 'the prefix and the parsed id disagree');
});

t.test('segment names sort by their first id and are recognised back', async (t) => {
  t.equal(segmentName(1), '0000000000000001.ndjson');
  t.equal(segmentName(1234567890123), '0000001234567890123'.slice(-16) + '.ndjson');
  t.equal(segmentStart(segmentName(42)), 42);
  t.equal(segmentStart('deleted.json'), null);
  t.equal(segmentStart('0000000000000001.ndjson.tmp'), null);
  t.equal(segmentStart('1.ndjson'), null);
  const names = [segmentName(100), segmentName(9), segmentName(1000)].sort();
  t.same(names.map(segmentStart), [9, 100, 1000]);
});

t.test('cursorAt points at an id whose place on disk is unknown', async (t) => {
  t.same(cursorAt(7), { id: 7, seg: -1, pos: 0 });
});
