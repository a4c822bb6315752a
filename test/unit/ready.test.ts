// Readiness reads listening ports from /proc/net/tcp{,6}: the parser, on real lines.
import t from 'tap';
import { listeningPorts } from '../../lib/os/ready.js';

t.test('listening ports are the LISTEN (0A) rows, IPv4 and IPv6, any address', async (t) => {
  const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0
   1: 00000000:96B1 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12346 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000        0 12347 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C350 0100007F:1F90 06 00000000:00000000 03:00000E5B 00000000     0        0 0 3 0000000000000000`;
  const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:A411 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2222 1 0000000000000000 100 0 0 10 0`;
  const ports = listeningPorts(tcp6, listeningPorts(tcp));
  t.same(
    [...ports].sort((a, b) => a - b),
    [8080, 38577, 42001],
    'established and time-wait rows are not listeners',
  );
  t.same([...listeningPorts('')], []);
  t.same([...listeningPorts('garbage\n  0: nonsense')], []);
});
