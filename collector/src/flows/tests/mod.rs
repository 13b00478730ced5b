mod capture;
mod succession;
