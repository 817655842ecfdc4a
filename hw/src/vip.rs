//! Virtual IP addresses: added and removed through rtnetlink, announced with gratuitous ARP.
//!
//! The active node of a pair adds the VIP to its data interface and announces it (an ARP request
//! for the VIP from the VIP, RFC 5227's "ARP announcement", broadcast) so the switch and the hosts
//! learn the new owner at once. On release the VIP is removed before anything else.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// Why a VIP change failed.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("interface {name}: {source}")]
    Interface { name: String, source: io::Error },
    #[error("netlink: {0}")]
    Netlink(io::Error),
    #[error("gratuitous ARP on {name}: {source}")]
    Arp { name: String, source: io::Error },
}

/// An IPv4 address with its prefix on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

fn address_message(kind: u16, flags: u16, ifindex: u32, vip: &Vip) -> Vec<u8> {
    let mut attributes = Vec::new();
    for attribute in [IFA_LOCAL, IFA_ADDRESS] {
        attributes.extend_from_slice(&8u16.to_ne_bytes());
        attributes.extend_from_slice(&attribute.to_ne_bytes());
        attributes.extend_from_slice(&vip.address.octets());
    }
    let length = 16 + 8 + attributes.len();
    let mut message = Vec::with_capacity(length);
    message.extend_from_slice(&(length as u32).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
                                                    // struct ifaddrmsg: family, prefix length, flags, scope, interface index.
    message.extend_from_slice(&[libc::AF_INET as u8, vip.prefix, 0, 0]);
    message.extend_from_slice(&ifindex.to_ne_bytes());
    message.extend_from_slice(&attributes);
    message
}

/// Sends one request and waits for the kernel's acknowledgement (an error message with code 0).
fn netlink_request(message: &[u8]) -> io::Result<()> {
    let socket = Socket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(NETLINK_ROUTE)))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(message)?;
    let mut buffer = [0u8; 4096];
    let received = std::io::Read::read(&mut &socket, &mut buffer)?;
    let reply = &buffer[..received];
    if reply.len() < 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink reply"));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != NLMSG_ERROR {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected netlink reply type {kind}")));
    }
    let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

fn index_of(name: &str) -> Result<u32, VipError> {
    sys::interface_index(name).map_err(|source| VipError::Interface { name: name.to_string(), source })
}

/// Adds the VIP; already present counts as done.
pub fn add(vip: &Vip) -> Result<(), VipError> {
    let index = index_of(&vip.interface)?;
    match netlink_request(&address_message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, index, vip)) {
        Err(error) if error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map_err(VipError::Netlink),
    }
}

/// Removes the VIP; already absent counts as done.
pub fn remove(vip: &Vip) -> Result<(), VipError> {
    let index = index_of(&vip.interface)?;
    match netlink_request(&address_message(RTM_DELADDR, 0, index, vip)) {
        Err(error) if error.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other.map_err(VipError::Netlink),
    }
}

/// The MAC address of an interface, from sysfs.
pub fn mac_address(interface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("MAC address '{}'", text.trim())));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "MAC address"))?;
    }
    Ok(mac)
}

/// The ARP announcement for `address` from `mac`: an ARP request whose sender and target are the VIP.
pub fn arp_announcement(mac: [u8; 6], address: Ipv4Addr) -> [u8; 28] {
    let mut packet = [0u8; 28];
    packet[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    packet[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&address.octets());
    packet[24..28].copy_from_slice(&address.octets());
    packet
}

/// Broadcasts `count` ARP announcements for the VIP, `spacing` apart (switches and hosts that miss
/// the first learn from the next).
pub fn announce(vip: &Vip, count: u32, spacing: Duration) -> Result<(), VipError> {
    let arp_error = |source: io::Error| VipError::Arp { name: vip.interface.clone(), source };
    let index = index_of(&vip.interface)?;
    let mac = mac_address(&vip.interface).map_err(arp_error)?;
    let socket =
        Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from((libc::ETH_P_ARP as u16).to_be() as i32)))
            .map_err(arp_error)?;
    let packet = arp_announcement(mac, vip.address);
    for attempt in 0..count {
        if attempt > 0 {
            std::thread::sleep(spacing);
        }
        sys::send_arp_broadcast(socket.as_raw_fd(), index, &packet).map_err(arp_error)?;
    }
    Ok(())
}

/// A packet socket that receives the ARP frames of one interface (incoming and outgoing), for tests
/// and for watching a takeover from a neighbour's point of view.
pub fn arp_listener(interface: &str) -> Result<Socket, VipError> {
    let index = index_of(interface)?;
    let protocol = libc::ETH_P_ARP as u16;
    let socket = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(protocol.to_be() as i32)))
        .map_err(|source| VipError::Arp { name: interface.to_string(), source })?;
    sys::bind_packet(socket.as_raw_fd(), index, protocol)
        .map_err(|source| VipError::Arp { name: interface.to_string(), source })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_address_message_layout() {
        let vip = Vip { interface: "x".into(), address: Ipv4Addr::new(198, 18, 0, 9), prefix: 32 };
        let message = address_message(RTM_NEWADDR, NLM_F_CREATE, 7, &vip);
        assert_eq!(message.len(), 40);
        assert_eq!(u32::from_ne_bytes([message[0], message[1], message[2], message[3]]), 40);
        assert_eq!(message[16], libc::AF_INET as u8);
        assert_eq!(message[17], 32);
        assert_eq!(u32::from_ne_bytes([message[20], message[21], message[22], message[23]]), 7);
        assert_eq!(&message[28..32], &[198, 18, 0, 9]);
        assert_eq!(&message[36..40], &[198, 18, 0, 9]);
    }

    #[test]
    fn arp_announcement_claims_the_vip_from_the_vip() {
        let packet = arp_announcement([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(&packet[6..8], &[0, 1]);
        assert_eq!(&packet[14..18], &packet[24..28]);
        assert_eq!(&packet[18..24], &[0; 6]);
    }
}
