/*
 * spoof-udp SRC_IP SRC_PORT DST_IP DST_PORT TEXT: sends one UDP datagram with a forged source
 * address through a raw socket (CAP_NET_RAW, which Docker gives containers by default). Used by
 * tests/e2e/docker_firewall_test.ts from inside a monitored container.
 */
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: spoof-udp SRC_IP SRC_PORT DST_IP DST_PORT TEXT\n");
    return 2;
  }
  unsigned char packet[1500];
  size_t len = strlen(argv[5]);
  if (len > sizeof(packet) - sizeof(struct iphdr) - sizeof(struct udphdr)) return 2;
  memset(packet, 0, sizeof(packet));
  struct iphdr *ip = (struct iphdr *)packet;
  struct udphdr *udp = (struct udphdr *)(packet + sizeof(*ip));
  memcpy(packet + sizeof(*ip) + sizeof(*udp), argv[5], len);
  size_t total = sizeof(*ip) + sizeof(*udp) + len;
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->tot_len = htons(total);
  if (inet_pton(AF_INET, argv[1], &ip->saddr) != 1 || inet_pton(AF_INET, argv[3], &ip->daddr) != 1) {
    return 2;
  }
  udp->source = htons(atoi(argv[2]));
  udp->dest = htons(atoi(argv[4]));
  udp->len = htons(sizeof(*udp) + len); /* checksum 0: none, as IPv4 allows */
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    perror("socket");
    return 1;
  }
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = ip->daddr};
  if (sendto(fd, packet, total, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
    perror("sendto");
    return 1;
  }
  return 0;
}
