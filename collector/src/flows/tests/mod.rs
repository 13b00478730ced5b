mod capture;
mod succession;
mod warnings;
